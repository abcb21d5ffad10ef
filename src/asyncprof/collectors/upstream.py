"""Start the fanout scenario's upstream HTTP service (:mod:`asyncprof.upstream`) and wait until it listens."""

import socket
import sys
import time
from collections.abc import Sequence

from asyncprof.errors import UpstreamError
from asyncprof.processes import ManagedProcess, ProcessGroup, free_port
from asyncprof.run import Run

READY_TIMEOUT = 15.0
#: The variable that gives the target's fanout views the upstream's base URL.
ENV_VAR = "ASYNCPROF_UPSTREAM_URL"


def upstream_command(host: str, port: int, delay_ms: float) -> list[str]:
    return [sys.executable, "-m", "asyncprof.upstream", "--host", host, "--port", str(port),
            "--delay-ms", f"{delay_ms:g}"]


def start_upstream(group: ProcessGroup, run: Run, *, host: str = "127.0.0.1", delay_ms: float,
                   cpus: Sequence[int] | None = None) -> tuple[ManagedProcess, str]:
    """Start the upstream in *group* (so it is stopped on any exit); return it and its base URL.

    Blocks until it accepts TCP connections; raises UpstreamError (with the end of its log,
    ``logs/upstream.log``) if it exits or does not listen within :data:`READY_TIMEOUT` seconds.
    """
    port = free_port(host)
    log_path = run.logs_dir / "upstream.log"
    # With --pin it runs on the load generator's CPUs: it stands for a service on another machine.
    proc = group.start("upstream", upstream_command(host, port, delay_ms), log_path=log_path, cpus=cpus)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not proc.running():
            raise UpstreamError(f"the upstream service exited during start-up: {_tail(run, 'upstream.log')}",
                                f"full log: {log_path}")
        if _accepts(host, port):
            address = f"[{host}]" if ":" in host else host
            return proc, f"http://{address}:{port}"
        time.sleep(0.05)
    raise UpstreamError(f"the upstream service did not listen on {host}:{port} within {READY_TIMEOUT:.0f} s: "
                        f"{_tail(run, 'upstream.log')}", f"full log: {log_path}")


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _tail(run: Run, name: str, lines: int = 3) -> str:
    try:
        text = (run.logs_dir / name).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) if text else "(empty log)"
