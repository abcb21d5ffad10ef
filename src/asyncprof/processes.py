"""Child processes asyncprof starts, and stopping them by pid whatever happens.

Every child runs in its own session (process group whose id is its pid), so
Ctrl-C in the terminal reaches only asyncprof, which then stops the children
in reverse start order: first the polite signal, then SIGKILL to the group
after a grace period.  Nothing is ever stopped by name.
"""

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from asyncprof.errors import PortInUseError


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
    ) -> ManagedProcess:
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
