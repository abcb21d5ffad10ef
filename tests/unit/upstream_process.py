"""A real upstream service (``python -m asyncprof.upstream``) for the tests, in its own process."""

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from asyncprof.processes import free_port


@contextlib.contextmanager
def running_upstream(delay_ms: float) -> Iterator[str]:
    """Start the upstream with *delay_ms* on a free loopback port; yield its base URL; stop it."""
    port = free_port("127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "asyncprof.upstream", "--port", str(port), "--delay-ms",
                             f"{delay_ms:g}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else proc.returncode
                assert time.monotonic() < deadline, "the upstream did not listen within 15 s"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
