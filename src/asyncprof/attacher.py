"""``asyncprof attach``: profile a running gunicorn/uvicorn/granian server that asyncprof did not start.

What it does, in order:

1. **Checks, before anything is written or started** (each failure is an :class:`AttachError`,
   one line, exit code 2): the pid exists and is not a zombie; this user may trace it (``py-spy
   dump --nonblocking`` on it, which reads its memory without pausing it); the URL is ``http://``
   or ``https://`` and answers (any HTTP status counts as an answer; 4xx/5xx is a warning, as the
   load's requests would all be errors).  With ``--no-load`` the URL is optional.
2. **A run directory** (``traces/<time>-attach-<server>-<hex>``) whose manifest has ``kind:
   "attach"``, the server read from its command line (:func:`~asyncprof.collectors.proctree.guess_server`),
   its workers (the pid's descendants), and ``missing``: what cannot be known from outside.
3. **Load** from Locust (:func:`asyncprof.collectors.loadgen.start_locust`) on the ``--path``
   endpoints, closed loop (``--users``) or open loop (``--rate``), or none (``--no-load``: the
   server's own traffic is observed, so there is no client latency).
4. **The measured window** (after ``--warmup`` from the first request, or from the start with
   ``--no-load``): py-spy on the pid and its subprocesses, kernel CPU of the pid and every
   descendant (:mod:`asyncprof.collectors.procstat`).

The attached server is never signalled, stopped or changed: only the processes asyncprof starts
(Locust, py-spy) are stopped, by pid, on every exit (completion, error, Ctrl-C, SIGTERM).  The
manifest ends with status ``complete``, ``failed`` or ``interrupted``, and ``asyncprof report``
reads it like any run: CPU profile, client latency, the findings that need no in-worker hooks,
and a ``missing`` statement.
"""

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console

from asyncprof import __version__
from asyncprof.collectors.loadgen import TAIL_SECONDS, LoadGenerator, LoadPlan, RequestLogTail, start_locust
from asyncprof.collectors.procstat import CpuSnapshot, cpu_window
from asyncprof.collectors.proctree import (ServerGuess, cmdline, descendants, guess_server, listening_ports,
                                           process_alive, process_state, project_packages)
from asyncprof.collectors.pyspy import PTRACE_HINT, SAMPLING_FLAGS, failure_reason, pyspy_binary, start_pyspy
from asyncprof.config import DEFAULT_PYSPY_RATE
from asyncprof.errors import AsyncprofError, Interrupted, LoadError, ServerError, UsageError
from asyncprof.processes import ManagedProcess, ProcessGroup
from asyncprof.run import Run
from asyncprof.scenarios import Endpoint
from asyncprof.versions import host_info, package_versions

#: Locust must send its first request within this many seconds of starting.
FIRST_REQUEST_TIMEOUT = 20.0
#: How long the URL check and the py-spy permission check may take.
CHECK_TIMEOUT = 15.0
FIND_PID = "find the server's master pid with: pgrep -af 'gunicorn|uvicorn|granian'"
#: The instruments that live inside the workers: an attached server has none of them.
IN_WORKER = ("otel", "pyinstrument", "accounting")
MISSING_HOOKS = ("no per-request breakdown (where each request's time went: attribution_ms, sync<->async hops, "
                 "queries and event-loop waits per request), no OpenTelemetry spans or traces and no pyinstrument "
                 "profiles: they need asyncprof's hooks inside the workers, which only servers asyncprof starts "
                 "have (asyncprof record)")
MISSING_LOAD = ("no client latency or throughput: --no-load observed the server's own traffic, which asyncprof "
                "does not see (the CPU profile and the workers' CPU are over that traffic)")


class AttachError(AsyncprofError):
    """The process or URL to attach to cannot be used: gone, not permitted, not a server, unreachable."""

    exit_code = 2


@dataclass
class AttachConfig:
    """What ``asyncprof attach`` was asked to do.  :meth:`validate` raises UsageError on the first bad knob.

    ``users`` None means 10 closed-loop users, or at most 50 connections with ``rate``; ``paths`` are
    ``--path`` entries (``/items/``, ``/items/:3``), ``["/"]`` when empty.  ``url`` may be None only
    with ``load`` False.
    """

    pid: int
    url: str | None = None
    duration: float = 30.0
    warmup: float = 5.0
    users: int | None = None
    rate: float | None = None
    load: bool = True
    paths: list[str] = field(default_factory=list)
    pyspy_rate: int = DEFAULT_PYSPY_RATE
    out: Path = field(default_factory=lambda: Path("traces"))

    def validate(self) -> "AttachConfig":
        if self.pid <= 0:
            raise UsageError(f"--pid must be a process id, not {self.pid}")
        if not 1 <= self.duration <= 86_400:
            raise UsageError(f"--duration must be between 1 and 86400 s, not {self.duration:g}")
        if not 0 <= self.warmup <= 3600:
            raise UsageError(f"--warmup must be between 0 and 3600 s, not {self.warmup:g}")
        if not 1 <= self.pyspy_rate <= 1000:
            raise UsageError(f"--pyspy-rate must be between 1 and 1000, not {self.pyspy_rate}")
        if not self.load:
            given = [f for f, v in (("--users", self.users), ("--rate", self.rate), ("--path", self.paths)) if v]
            if given:
                raise UsageError(f"--no-load sends no request, so {', '.join(given)} would be ignored",
                                 "drop them or --no-load")
            return self
        if self.url is None:
            raise UsageError("attach needs --url to send load to", "e.g. --url http://127.0.0.1:8000, or --no-load")
        if self.users is not None and not 1 <= self.users <= 100_000:
            raise UsageError(f"--users must be between 1 and 100000, not {self.users}")
        if self.rate is not None and not 0.1 <= self.rate <= 1_000_000:
            raise UsageError(f"--rate must be between 0.1 and 1000000 requests per second, not {self.rate:g}")
        self.users = self.users or (50 if self.rate is not None else 10)
        self.paths = self.paths or ["/"]
        return self

    @property
    def endpoints(self) -> list[Endpoint]:
        return merge_endpoints([parse_path(p) for p in self.paths])

    def to_manifest(self, guess: ServerGuess, workers: list[int]) -> dict[str, Any]:
        """The manifest's ``config`` (the report reads ``workers``, ``users``, ``rate``, ``warmup``, ``app_packages``)."""
        return {"kind": "attach", "mode": None, "scenario": None, "view": None, "pid": self.pid,
                "url": self.url, "duration": self.duration, "warmup": self.warmup,
                "users": self.users if self.load else None, "rate": self.rate, "load": self.load,
                "paths": list(self.paths), "load_processes": 1 if self.load else 0, "pyspy_rate": self.pyspy_rate,
                "workers": len(workers) or 1, "app_packages": list(guess.app_packages), "out": str(self.out)}


def parse_path(spec: str) -> Endpoint:
    """``--path`` text to an endpoint ``(name, path, weight)``: ``/items/`` or ``/items/:3`` (weight 3).

    The name is the path (characters the load generator's list format reserves, ``,=:``, become
    ``_``).  UsageError for a path not starting with ``/``, with a comma, or a weight below 1.
    """
    path, weight = spec.strip(), 1
    head, sep, tail = path.rpartition(":")
    if sep and tail.isdigit():
        path, weight = head, int(tail)
    if not path.startswith("/") or "," in path or ":" in path or weight < 1:
        raise UsageError(f"--path takes a URL path, optionally with a weight, not {spec!r}",
                         "e.g. --path /items/ --path /api/items/:3")
    name = path.translate(str.maketrans({",": "_", "=": "_", ":": "_"}))
    return name, path, weight


def merge_endpoints(endpoints: list[Endpoint]) -> list[Endpoint]:
    """The same path given twice counts once, with the weights added."""
    out: dict[str, Endpoint] = {}
    for name, path, weight in endpoints:
        old = out.get(path)
        out[path] = (name, path, weight + (old[2] if old else 0))
    return list(out.values())


def check_url(url: str) -> tuple[str, str, int]:
    """``(base URL, host, port)`` of an ``http(s)://host[:port]`` URL; AttachError for anything else.

    The URL names the server only: a path belongs in ``--path``.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise AttachError(f"--url {url!r} is not a URL", "e.g. --url http://127.0.0.1:8000") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AttachError(f"--url {url!r} is not an http:// or https:// URL", "e.g. --url http://127.0.0.1:8000")
    if parts.path not in ("", "/") or parts.query:
        raise AttachError(f"--url {url!r} has a path: the URL names the server, the pages go in --path",
                          f"--url {parts.scheme}://{parts.netloc} --path {parts.path or '/'}")
    return f"{parts.scheme}://{parts.netloc}", parts.hostname, port or (443 if parts.scheme == "https" else 80)


def probe_url(base: str, path: str) -> int:
    """GET *base* + *path* once (no proxy) and return the HTTP status; AttachError when nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(base + path, timeout=CHECK_TIMEOUT) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AttachError(f"{base}{path} is unreachable: {reason}", "is the server listening there?") from None


def check_process(pid: int) -> None:
    """AttachError unless *pid* is a live process other than this one that this user may signal."""
    if pid == os.getpid():
        raise AttachError(f"pid {pid} is asyncprof itself", "give the server's master pid")
    if not process_alive(pid):
        state = "a zombie (exited, not yet reaped)" if process_state(pid) == "Z" else "not running"
        raise AttachError(f"no process with pid {pid}: it is {state}", FIND_PID)
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only the permission is checked
    except PermissionError:
        raise AttachError(f"not permitted to attach to pid {pid} (it belongs to another user)",
                          "run asyncprof as that user or as root") from None
    except ProcessLookupError:
        raise AttachError(f"no process with pid {pid}", FIND_PID) from None


def check_pyspy(pid: int) -> str:
    """The py-spy binary, after checking that it can read *pid* (``py-spy dump --nonblocking``).

    AttachError with py-spy's reason (and what to do about ptrace permissions) when it cannot.
    """
    binary = pyspy_binary()
    if binary is None:
        raise AttachError("py-spy is not installed", "pip install py-spy")
    with tempfile.NamedTemporaryFile("w+b", suffix=".log") as log:
        try:
            code = subprocess.run([binary, "dump", "--pid", str(pid), "--nonblocking"], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT, timeout=CHECK_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            raise AttachError(f"py-spy could not read pid {pid} within {CHECK_TIMEOUT:.0f} s",
                              "is it a Python process?") from None
        if code != 0:
            if not process_alive(pid):
                raise AttachError(f"pid {pid} exited while asyncprof was checking it")
            text = Path(log.name).read_text(errors="replace")
            if "Permission denied" in text or "Operation not permitted" in text:
                raise AttachError(f"not permitted to profile pid {pid}: py-spy's ptrace was denied", PTRACE_HINT)
            raise AttachError(f"cannot profile pid {pid}: {failure_reason(Path(log.name))}")
    return binary


def redact_argv(argv: list[str]) -> list[str]:
    """*argv* without secrets: URL passwords, and the values of ``--x-password=…``-like options."""
    from asyncprof.database import redact

    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and any(s in key.lower() for s in ("password", "secret", "token", "key")):
            out.append(f"{key}=***")
        elif sep and "://" in value and "://" not in key:
            out.append(f"{key}={redact(value)}")
        else:
            out.append(redact(arg) if "://" in arg else arg)
    return out


def attach(config: AttachConfig, console: Console | None = None) -> Run:
    """Profile the running server at ``config.pid`` as the module docstring says; return the run (complete).

    Raises AttachError/UsageError before anything is written; afterwards LoadError, ServerError (the
    attached server exited), :class:`Interrupted` (Ctrl-C, SIGTERM) with ``run_path`` set and the run
    directory left consistent.  The attached server is never signalled.
    """
    from asyncprof.recorder import interruptible

    console = console or Console(stderr=True)
    config.validate()
    check_process(config.pid)
    argv = cmdline(config.pid)
    guess = guess_server(argv)
    guess = replace(guess, app_packages=tuple(dict.fromkeys((*guess.app_packages, *project_packages(config.pid)))))
    warnings: list[str] = []
    base = None
    if config.url is not None:
        base, host, port = check_url(config.url)
        path = config.endpoints[0][1] if config.load else "/"
        answer = probe_url(base, path)
        if answer >= 400:
            warnings.append(f"GET {path} answered {answer}: requests with that answer count as errors")
        tree = [config.pid, *descendants(config.pid)]
        ports = listening_ports(tree)
        if host in ("127.0.0.1", "localhost", "::1") and ports and port not in ports:
            warnings.append(f"pid {config.pid} listens on port(s) {sorted(ports)}, not on {port}: the load goes to "
                            "another process (a proxy in front?), and the profile is of pid "
                            f"{config.pid} only")
    check_pyspy(config.pid)
    if guess.server == "unknown":
        warnings.append(f"pid {config.pid} ({' '.join(argv)[:80]}) is not a known server (gunicorn, uvicorn, "
                        "granian, hypercorn, daphne): findings that depend on the server are left out")

    workers = descendants(config.pid)
    run = Run.create(config.out, f"attach-{guess.server}")
    missing = [MISSING_HOOKS] + ([] if config.load else [MISSING_LOAD])
    instruments: dict[str, dict[str, Any]] = {
        "pyspy": {"enabled": True, "rate_hz": config.pyspy_rate, "flags": [*SAMPLING_FLAGS, "--nonblocking"]},
        **{name: {"enabled": False, "unavailable": "attached: no in-worker hooks"} for name in IN_WORKER},
    }
    run.update(
        kind="attach",
        asyncprof_version=__version__,
        command=["asyncprof", *redact_argv(sys.argv[1:])],
        config=config.to_manifest(guess, workers),
        target={"pid": config.pid, "cmdline": redact_argv(argv), "url": base, "workers": workers,
                "note": "a server asyncprof did not start: it was observed, never signalled or stopped"},
        server={"mode": guess.mode, "interface": guess.interface, "server": guess.server, "threads": guess.threads,
                "app": guess.app, "description": f"attached: {guess.description}", "attached": True},
        instruments=instruments,
        load={"model": "none" if not config.load else ("open" if config.rate is not None else "closed"),
              "rate_rps": config.rate, "users": config.users, "processes": 1 if config.load else 0,
              "distributed": False, "paths": [list(e) for e in config.endpoints] if config.load else []},
        missing=missing,
        pids={"server": config.pid, "workers": workers},
        versions=package_versions(),
        versions_note="the versions of asyncprof's environment; the attached server may run others",
        host=host_info(),
        started_unix=time.time(),
        warnings=warnings,
    )
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    console.print(f"attaching to pid {config.pid} ({guess.description}, {len(workers)} workers) → {run.path}",
                  highlight=False, soft_wrap=True)
    status, error = "failed", None
    with interruptible():
        try:
            _attach_into(run, config, base, instruments, console)
            status = "complete"
        except AsyncprofError as exc:
            status = "interrupted" if isinstance(exc, Interrupted) else "failed"
            error, exc.run_path = str(exc), run.path
            raise
        finally:
            _finish(run, status, error, instruments)
    return run


def _attach_into(run: Run, config: AttachConfig, base: str | None, instruments: dict[str, dict[str, Any]],
                 console: Console) -> None:
    """Load (if any), warm-up, then py-spy and CPU over the window; everything started here is stopped here."""
    from asyncprof.recorder import env_without_secrets

    with ProcessGroup() as group:
        load: LoadGenerator | None = None
        if config.load and base is not None:
            users = config.users or 10
            plan = LoadPlan(endpoints=config.endpoints, users=users, spawn_rate=float(users), rate=config.rate,
                            run_time=config.warmup + config.duration + TAIL_SECONDS + 5)
            load = start_locust(group, run, url=base, plan=plan, env=env_without_secrets(dict(os.environ)))
            run.manifest["pids"]["locust"] = load.pid
            run.save()
        session = _Session(run, config, group, load, instruments)
        with console.status("waiting for the first request…") as spinner:
            first = session.first_request() if load is not None else time.time()
            window = {"start_unix": first + config.warmup, "end_unix": first + config.warmup + config.duration}
            completed = False
            try:
                while True:
                    session.check()
                    now = time.time()
                    if session.cpu_start is None and now >= window["start_unix"]:
                        session.open_window(window)
                    if now >= window["end_unix"]:
                        completed = True
                        break
                    if load is not None and not load.running():
                        run.manifest["warnings"].append("Locust ended before the window did; see logs/locust.log")
                        break
                    phase = "warm-up" if session.cpu_start is None else "measuring"
                    spinner.update(f"[{phase}] {window['end_unix'] - now:4.0f} s left, {session.requests} requests, "
                                   f"{session.errors} errors")
                    time.sleep(0.25)
            finally:
                session.close_window(window, completed)
    if session.cpu_start is None:
        raise LoadError("the measured window never started", f"see {run.logs_dir}")


class _Session:
    """One attach run in progress: follows the request log and the server, owns py-spy and the CPU snapshots."""

    def __init__(self, run: Run, config: AttachConfig, group: ProcessGroup, load: LoadGenerator | None,
                 instruments: dict[str, dict[str, Any]]) -> None:
        self.run, self.config, self.group, self.load, self.instruments = run, config, group, load, instruments
        self.pid = config.pid
        self.tail = RequestLogTail(run.requests_path)
        self.requests = self.errors = 0
        self.workers: list[int] = []
        self.pyspy: ManagedProcess | None = None
        self.cpu_start: CpuSnapshot | None = None

    def check(self) -> float | None:
        """Count new requests; ServerError if the attached server is gone; the earliest new start, if any."""
        rows = self.tail.read()
        self.requests += len(rows)
        self.errors += sum(1 for _, code, _ in rows if code == 0 or code >= 400)
        if not process_alive(self.pid):
            raise ServerError(f"the attached server (pid {self.pid}) exited during the run")
        return min(r[0] for r in rows) if rows else None

    def first_request(self) -> float:
        """The start of Locust's first request; LoadError if none comes in time or Locust exits."""
        started = time.time()
        while (first := self.check()) is None:
            if time.time() - started > FIRST_REQUEST_TIMEOUT or (self.load is not None and not self.load.running()):
                raise LoadError("Locust sent no request", f"see {self.run.logs_dir / 'locust.log'}")
            time.sleep(0.1)
        return first

    def snapshot(self) -> CpuSnapshot:
        """CPU of the master (``server``), each worker (``worker:<pid>``; a lone process is its own worker),
        Locust and py-spy."""
        names: dict[str, int | None] = {f"worker:{w}": w for w in self.workers or [self.pid]}
        if self.workers:
            names["server"] = self.pid
        names.update(self.load.pids() if self.load is not None else {})
        names["pyspy"] = self.pyspy.pid if self.pyspy is not None else None
        return CpuSnapshot.take(names)

    def open_window(self, window: dict[str, float]) -> None:
        """Start py-spy and the CPU accounting; AttachError if py-spy fails at once."""
        run = self.run
        self.workers = descendants(self.pid)
        run.update(window=dict(window), pids={**run.manifest["pids"], "workers": self.workers})
        self.pyspy = start_pyspy(self.group, run, pid=self.pid, rate=self.config.pyspy_rate,
                                 duration=self.config.duration)
        self.cpu_start = self.snapshot()  # at once: the window's CPU starts with py-spy
        if self.pyspy is None:
            raise AttachError("py-spy is not installed", "pip install py-spy")
        run.manifest["pids"]["pyspy"] = self.pyspy.pid
        run.save()
        if self.pyspy.wait(0.5) not in (None, 0):
            reason = self.instruments["pyspy"]["error"] = failure_reason(run.logs_dir / "pyspy.log")
            raise AttachError(f"py-spy could not attach to pid {self.pid}: {reason}")

    def close_window(self, window: dict[str, float], completed: bool) -> None:
        """Record the window's CPU; let py-spy finish (at once when the run ends early); stop Locust."""
        run = self.run
        if self.cpu_start is not None:
            window["end_unix"] = min(window["end_unix"], time.time())
            run.update(window=dict(window), cpu_window=cpu_window(self.cpu_start, self.snapshot()))
            after = descendants(self.pid)
            if self.workers and set(after) != set(self.workers):
                run.manifest["warnings"].append(
                    f"the workers changed during the window ({self.workers} → {after}: restarted by the master?); "
                    "the CPU of workers started in the window is not counted")
        if self.pyspy is not None:
            # py-spy ends by itself at the end of its --duration; early, SIGINT makes it write what it has.
            if not completed or self.pyspy.wait(10) is None:
                self.pyspy.stop(grace=10)
            if self.pyspy.popen.returncode not in (0, None):
                self.instruments["pyspy"]["error"] = failure_reason(run.logs_dir / "pyspy.log")
        if self.load is not None:
            # Requests started in the window answer within the tail; then SIGINT makes Locust stop its
            # users and flush its request log (it would otherwise run out its time).
            if completed:
                self.load.wait(TAIL_SECONDS)
            self.load.main.stop(grace=10)


def _finish(run: Run, status: str, error: str | None, instruments: dict[str, dict[str, Any]]) -> None:
    """The final manifest (and the speedscope file); never raises for a missing piece."""
    from asyncprof.renderers.speedscope import write_speedscope

    samples = run.pyspy_dir / "samples.txt"
    instruments["pyspy"]["produced"] = {"samples_file": samples.exists()}
    if samples.exists():
        try:
            write_speedscope(samples, run.pyspy_dir / "speedscope.json", run.run_id)
            instruments["pyspy"]["produced"]["speedscope_file"] = True
        except (OSError, ValueError):
            pass
    fields: dict[str, Any] = {"status": status, "ended_unix": time.time(), "instruments": instruments}
    if error:
        fields["error"] = error
    run.update(**fields)
