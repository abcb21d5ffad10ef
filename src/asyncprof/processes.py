"""Child processes asyncprof starts, and stopping them by pid whatever happens.

Every child runs in its own session (process group whose id is its pid), so
Ctrl-C in the terminal reaches only asyncprof, which then stops the children
in reverse start order: first the polite signal, then SIGKILL to the group
after a grace period.  Nothing is ever stopped by name.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from asyncprof.errors import PortInUseError, UsageError


class ManagedProcess:
    """A child process with its name, its log file and a stop policy."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: IO[bytes] | None, stop_signal: int) -> None:
        self.name = name
        self.popen = popen
        self._log = log
        self.stop_signal = stop_signal

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to *timeout* seconds; return the exit code, or None if still running."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 10.0) -> int | None:
        """Send the stop signal, wait *grace* seconds, then SIGKILL the whole process group."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, self.stop_signal)
            if self.wait(grace) is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.wait(5)
        # Children that outlived their parent (e.g. a worker orphaned by a killed master).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.popen.returncode


class ProcessGroup:
    """Starts children and guarantees they are stopped, in reverse order, on exit."""

    def __init__(self) -> None:
        self._procs: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        cwd: Path | None = None,
        cpus: Sequence[int] | None = None,
    ) -> ManagedProcess:
        """Start *argv* in a session of its own, output to *log_path*; on *cpus* only when given.

        CPU pinning goes through ``taskset``, which execs the command: the pid stays the child's,
        and every process the child forks inherits the CPU set.
        """
        if cpus:
            argv = [taskset_binary(), "-c", ",".join(str(c) for c in cpus), *argv]
        log = open(log_path, "ab") if log_path else None  # noqa: SIM115 - closed by ManagedProcess.stop
        popen = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,  # run files written by children are the owner's only
            cwd=cwd,
        )
        proc = ManagedProcess(name, popen, log, stop_signal)
        self._procs.append(proc)
        return proc

    def stop_all(self, grace: float = 10.0) -> None:
        while self._procs:
            self._procs.pop().stop(grace)

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def taskset_binary() -> str:
    """The path of util-linux's ``taskset``; UsageError when it is missing."""
    path = shutil.which("taskset")
    if path is None:
        raise UsageError("--pin needs the taskset program (package util-linux)", "install it or leave out --pin")
    return path


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def split_cpus(spec: str, cpus: Sequence[int]) -> tuple[list[int], list[int]]:
    """``--pin``'s CPU sets: (load generator side, target side).

    *spec* is ``auto`` (the last quarter of *cpus*, at least one, for the load generator; the
    rest for the target) or ``LOAD/TARGET`` with comma-separated CPU numbers and ranges, as
    taskset takes them (``1/0``, ``6,7/0-5``).  UsageError when a set is empty, overlaps the
    other, or names a CPU this process may not use.
    """
    usable = sorted(cpus)
    if spec == "auto":
        if len(usable) < 2:
            raise UsageError("--pin needs at least 2 usable CPUs", f"this process may use only CPU {usable}")
        n_load = max(1, len(usable) // 4)
        return usable[-n_load:], usable[:-n_load]
    load_text, sep, target_text = spec.partition("/")
    if not sep:
        raise UsageError(f"--pin takes 'auto' or LOAD/TARGET CPU lists, not {spec!r}", "e.g. --pin 1/0")
    load, target = _cpu_list(load_text, spec), _cpu_list(target_text, spec)
    if set(load) & set(target):
        raise UsageError(f"--pin {spec}: the load generator and the target share CPUs {sorted(set(load) & set(target))}",
                         "give them separate CPUs")
    unknown = sorted((set(load) | set(target)) - set(usable))
    if unknown:
        raise UsageError(f"--pin {spec}: CPUs {unknown} are not available here", f"usable CPUs: {usable}")
    return load, target


def pin_tree(pid: int, cpus: Sequence[int]) -> int:
    """Move *pid* and its current children onto *cpus* (children forked later inherit the set).

    For processes asyncprof did not start through :meth:`ProcessGroup.start` (the embedded
    PostgreSQL).  Returns how many processes were moved; vanished ones are skipped.
    """
    moved = 0
    for p in [pid, *_children(pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(p, cpus)
            moved += 1
    return moved


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(c) for c in f.read().split())
    return out


def _cpu_list(text: str, spec: str) -> list[int]:
    out: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            out.update(range(int(low), int(high or low) + 1))
    except ValueError:
        out.clear()
    if not out:
        raise UsageError(f"--pin {spec}: {text!r} is not a CPU list", "e.g. --pin 1/0 or --pin 6,7/0-5")
    return sorted(out)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port the OS says is free on *host* right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Raise PortInUseError if *port* on *host* cannot be bound."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            raise PortInUseError(
                f"port {port} on {host} is already in use", "choose another with --port, or omit --port"
            ) from None


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll *predicate* until it is true or *timeout* seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
