"""Run Locust headless in processes of its own and follow its per-request log.

One process by default; with ``processes > 1`` or remote workers, Locust's own distributed
mode (a master that schedules and workers that send), so a single generator process short of
CPU does not set the pace.  Workers send their request-log batches to the master, which alone
writes the log (see the locustfile), so workers on other machines need no shared disk.

The load is asyncprof's own users (:data:`LOCUSTFILE`, on ``plan.endpoints``) or, when
``plan.locustfile`` is set, the user's own locustfile run unedited through :data:`APP_LOCUSTFILE`,
which adds the same request log and ``traceparent`` headers (see :mod:`asyncprof.loadgen.app_locustfile`).
"""

import json
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asyncprof.errors import LoadError, UsageError
from asyncprof.loadgen.request_log import REQUEST_LOG_HEADER
from asyncprof.loadgen.trace_sampling import SAMPLE_ENV
from asyncprof.processes import ManagedProcess, ProcessGroup, free_port
from asyncprof.run import Run
from asyncprof.scenarios import Endpoint

LOCUSTFILE = Path(__file__).resolve().parent.parent / "loadgen" / "locustfile.py"
#: The wrapper that runs a user's locustfile (named by :data:`USER_LOCUSTFILE_ENV`) with asyncprof's log.
APP_LOCUSTFILE = LOCUSTFILE.with_name("app_locustfile.py")
#: The environment variable that tells :data:`APP_LOCUSTFILE` which locustfile to run (an absolute path).
USER_LOCUSTFILE_ENV = "ASYNCPROF_USER_LOCUSTFILE"
#: How long ``locust --list`` may take to import a user's locustfile.
CHECK_TIMEOUT = 60.0
# Extra seconds Locust runs past the measured window, so requests that start
# inside the window also finish inside Locust's run time.
TAIL_SECONDS = 2.0
#: Lines of a Locust log that mean the generator itself limited the load: Locust's own CPU
#: warning and the locustfile's schedule-lag warning.
SATURATION_PATTERNS = (
    re.compile(r"CPU usage (?:above|was too high)[^\n]*"),
    re.compile(r"asyncprof: load generator fell behind[^\n]*"),
)


@dataclass
class LoadPlan:
    """What the load generator is asked to do.

    Closed loop: ``users`` users, each sending its next request when the last one answered.
    Open loop (``rate`` set): ``rate`` requests per second in total, split evenly over the
    processes, over at most ``users`` connections per process.

    ``locustfile`` set: the users are that file's own ``User`` classes (``endpoints`` is not used,
    ``rate`` must be None: the open loop is asyncprof's own user), closed loop with ``users`` users.
    """

    endpoints: Sequence[Endpoint]
    users: int
    spawn_rate: float
    run_time: float
    rate: float | None = None
    processes: int = 1
    cpus: Sequence[int] | None = None
    remote_workers: int = 0  # workers the user starts on other machines (see remote_worker_command)
    master_bind: str = "127.0.0.1"
    master_port: int | None = None
    sample_traces: float = 1.0  # fraction of requests whose traceparent says sampled (see loadgen.trace_sampling)
    locustfile: Path | None = None  # the user's own locustfile, instead of asyncprof's users on endpoints

    def __post_init__(self) -> None:
        if self.locustfile is not None:
            self.locustfile = Path(self.locustfile).resolve()  # every process, local or remote, gets one path
            if self.rate is not None:
                raise UsageError("--rate needs asyncprof's own load (--path), not a locustfile",
                                 "drop --rate to run the locustfile's users closed loop, or drop --locustfile")

    @property
    def distributed(self) -> bool:
        return self.processes > 1 or self.remote_workers > 0

    @property
    def senders(self) -> int:
        """Locust processes that send requests: the local workers and the remote ones, or the one process."""
        return self.processes + self.remote_workers if self.distributed else 1


@dataclass
class LoadGenerator:
    """The Locust processes of one run: ``main`` (the only one, or the master) and its workers."""

    main: ManagedProcess
    workers: list[ManagedProcess] = field(default_factory=list)
    master_port: int | None = None  # distributed mode: where workers connect

    @property
    def pid(self) -> int:
        return self.main.pid

    def running(self) -> bool:
        return self.main.running()

    def wait(self, timeout: float) -> int | None:
        """Wait for the main process, then give the workers the same time to write their logs."""
        code = self.main.wait(timeout)
        for w in self.workers:
            w.wait(timeout)
        return code

    def pids(self) -> dict[str, int]:
        """Names for the CPU snapshots: ``locust`` and ``locust:<i>`` for each worker."""
        out = {"locust": self.main.pid}
        out.update({f"locust:{i}": w.pid for i, w in enumerate(self.workers, 1)})
        return out


def start_locust(group: ProcessGroup, run: Run, *, url: str, plan: LoadPlan, env: dict[str, str]) -> LoadGenerator:
    """Start ``locust --headless`` (and its workers when ``plan.processes > 1``) against *url*."""
    env = {**env, **sender_environment(plan)}
    env["ASYNCPROF_REQUEST_LOG"] = str(run.requests_path.resolve())
    if not run.requests_path.exists():
        run.requests_path.write_text(REQUEST_LOG_HEADER)
    if plan.rate is not None:
        # One arrival user per sending process; it spreads its share of the rate over its connections.
        users, spawn_rate = plan.senders, float(plan.senders)
    else:
        users, spawn_rate = plan.users, plan.spawn_rate
    base = [sys.executable, "-m", "locust", "-f", str(locustfile_for(plan)), "--loglevel", "WARNING"]
    # A user's locustfile runs in its own directory, as `locust -f` there would: relative paths it opens work.
    cwd = plan.locustfile.parent if plan.locustfile is not None else None
    argv = [
        *base,
        "--headless",
        "--host", url,
        "--users", str(users),
        "--spawn-rate", f"{spawn_rate:g}",
        "--run-time", f"{max(1, round(plan.run_time))}s",
        "--stop-timeout", "5",
        "--csv", str((run.path / "locust" / "stats").resolve()),
        "--only-summary",
        "--exit-code-on-error", "0",
    ]  # fmt: skip
    workers: list[ManagedProcess] = []
    port = plan.master_port or free_port(plan.master_bind)
    if plan.distributed:
        wait = 30 if not plan.remote_workers else 300
        argv += ["--master", "--master-bind-host", plan.master_bind, "--master-bind-port", str(port),
                 "--expect-workers", str(plan.senders),
                 "--expect-workers-max-wait", str(wait)]
    # SIGINT makes Locust stop its users, write its CSV and fire `quitting` (our log flush).
    main = group.start("locust", argv, env=env, log_path=run.logs_dir / "locust.log", stop_signal=signal.SIGINT,
                       cpus=plan.cpus, cwd=cwd)
    if plan.distributed:
        for i in range(1, plan.processes + 1):
            worker_argv = [*base, "--worker", "--master-host", _local_address(plan.master_bind), "--master-port", str(port)]
            workers.append(group.start(f"locust-worker-{i}", worker_argv, env=env,
                                       log_path=run.logs_dir / f"locust-worker-{i}.log",
                                       stop_signal=signal.SIGINT, cpus=plan.cpus, cwd=cwd))
    return LoadGenerator(main, workers, port if plan.distributed else None)


def _local_address(bind: str) -> str:
    """Where a worker on this machine reaches a master bound to *bind*."""
    return "127.0.0.1" if bind in ("", "0.0.0.0", "*") else ("::1" if bind == "::" else bind)


def locustfile_for(plan: LoadPlan) -> Path:
    """The file Locust runs for *plan*: the user's-locustfile wrapper, or asyncprof's own users."""
    return APP_LOCUSTFILE if plan.locustfile is not None else LOCUSTFILE


def sender_environment(plan: LoadPlan) -> dict[str, str]:
    """What every sending Locust process needs in its environment (local or remote)."""
    env: dict[str, str] = {}
    if plan.locustfile is not None:
        env[USER_LOCUSTFILE_ENV] = str(plan.locustfile)
    else:
        env["ASYNCPROF_PATHS"] = json.dumps([[name, path, weight] for name, path, weight in plan.endpoints])
        if plan.rate is not None:
            env["ASYNCPROF_RATE"] = f"{plan.rate / plan.senders:.6g}"
            env["ASYNCPROF_CONNECTIONS"] = str(plan.users)
    env[SAMPLE_ENV] = repr(plan.sample_traces)  # always: the caller's own variable may say otherwise
    return env


def remote_worker_command(plan: LoadPlan, master_host: str, port: int) -> str:
    """The shell command to start one Locust worker on another machine (with asyncprof installed).

    With a user's locustfile the worker runs the wrapper on the same absolute path, which must
    hold the same locustfile on that machine (``ASYNCPROF_USER_LOCUSTFILE`` in the command).
    """
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sender_environment(plan).items())
    if plan.locustfile is not None:
        # find_spec locates the wrapper without running it (importing it would import the locustfile).
        where = "import importlib.util as u; print(u.find_spec('asyncprof.loadgen.app_locustfile').origin)"
    else:
        where = "import asyncprof.loadgen.locustfile as f; print(f.__file__)"
    return f"{env} python -m locust -f \"$(python -c \"{where}\")\" " \
           f"--worker --master-host {master_host} --master-port {port}"


def check_locustfile(path: Path, env: Mapping[str, str]) -> list[str]:
    """The runnable ``User`` class names of the locustfile *path*, as Locust will see them.

    Runs ``locust -f <wrapper> --list`` in a subprocess (environment *env*, the one the run will
    use; the locustfile's directory as working directory, as in :func:`start_locust`), so the file
    is imported exactly as the run imports it, in a process of its own (its imports patch the
    world with gevent).  Raises :class:`LoadError` when the file is missing, does not import
    (the message carries Locust's last meaningful line: the exception, file and line), defines
    no ``User`` class, or takes more than :data:`CHECK_TIMEOUT` seconds to import.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise LoadError(f"locustfile {path} does not exist", "give the path of a Python file that defines Locust users")
    child_env = {k: v for k, v in env.items() if k != "ASYNCPROF_REQUEST_LOG"}  # --list must not log
    child_env[USER_LOCUSTFILE_ENV] = str(path)
    argv = [sys.executable, "-m", "locust", "-f", str(APP_LOCUSTFILE), "--list"]
    try:
        proc = subprocess.run(argv, env=child_env, cwd=path.parent, capture_output=True, text=True,
                              timeout=CHECK_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LoadError(f"locustfile {path} took more than {CHECK_TIMEOUT:g} s to import",
                        "make its import fast: no network calls or long work at module level") from None
    names = _listed_users(proc.stdout)
    if proc.returncode == 0 and names:
        return names
    if proc.returncode == 0:  # the wrapper exits 1 on no users; a Locust that lists none says so too
        raise LoadError(f"locustfile {path} defines no User class", _NO_USERS_HINT)
    line, ours = _last_error_line(proc.stderr + "\n" + proc.stdout)
    if not ours:  # Locust (or Python) failed before the wrapper could say why
        line = f"locustfile {path} does not load: {line}"
    hint = _NO_USERS_HINT if "defines no User class" in line else \
        f"fix it, then check with `locust -f {path.name} --list` in {path.parent}"
    raise LoadError(line, hint)


_NO_USERS_HINT = "define a subclass of HttpUser or FastHttpUser with at least one @task"


def _listed_users(stdout: str) -> list[str]:
    """The class names under ``Available Users:`` in the output of ``locust --list``."""
    lines = stdout.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Available Users:")
    except StopIteration:
        return []
    return [line.strip() for line in lines[start + 1:] if line.startswith("    ") and line.strip()]


def _last_error_line(output: str) -> tuple[str, bool]:
    """The line of a failed Locust start that says why, and whether it is the wrapper's own.

    The wrapper's ``asyncprof: ...`` line wins (it names the file and the cause); else the last
    line that is not traceback furniture or Locust's start-up chatter.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("asyncprof: "):
            return line.removeprefix("asyncprof: "), True
    for line in reversed(lines):
        if not line.startswith(("^", "~", "File ", "Traceback ")) and "/INFO/" not in line:
            return line[:300], False
    return "locust exited without saying why", False


def saturation_warnings(logs_dir: Path) -> list[str]:
    """The load generator's own complaints in its logs (each once), as manifest warnings."""
    seen: list[str] = []
    for path in sorted(logs_dir.glob("locust*.log")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for pattern in SATURATION_PATTERNS:
            for match in pattern.finditer(text):
                line = f"load generator ({path.stem}): {match.group(0).strip()}"
                if line not in seen:
                    seen.append(line)
    return seen


class RequestLogTail:
    """Reads complete new lines of the request log as Locust appends them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[tuple[float, int, float]]:
        """Return ``(start, status, latency_ms)`` for each request logged since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        out = []
        for line in lines:
            fields = line.split(b"\t")
            if len(fields) < 4 or fields[0] == b"start":
                continue
            try:
                out.append((float(fields[0]), int(fields[2]), float(fields[3])))
            except ValueError:
                continue
        return out
