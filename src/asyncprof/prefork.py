"""A minimal pre-fork process manager for servers that serve in one process (daphne).

``python -m asyncprof.prefork --bind HOST:PORT --workers N -- ARGV...`` binds a listening
socket, starts N copies of ARGV with the socket's descriptor inherited (``{fd}`` in ARGV is
replaced by its number), and waits.  The kernel spreads connections over the processes that
accept on the shared socket, as with gunicorn's or uvicorn's workers.

It is the server's master process as far as asyncprof is concerned: the recorder stops it by
pid, and py-spy samples it and each child (:class:`asyncprof.collectors.pyspy.PySpies`).  SIGTERM or SIGINT is passed on to every
child (each stops gracefully and flushes its files) and it exits once they all have.  If a
child exits on its own, the others are stopped and it exits with that child's code, so the
recorder sees the server fail.
"""

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

BACKLOG = 2048
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--bind must be HOST:PORT, not {bind!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def child_argv(argv: Sequence[str], fd: int) -> list[str]:
    return [a.replace("{fd}", str(fd)) for a in argv]


def serve(host: str, port: int, workers: int, argv: Sequence[str]) -> int:
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    for s in STOP_SIGNALS:
        signal.signal(s, on_signal)
    sock = listen(host, port)
    children = [subprocess.Popen(child_argv(argv, sock.fileno()), pass_fds=(sock.fileno(),))
                for _ in range(workers)]
    sock.close()  # the children hold it now
    code = 0
    while not stopping:
        exited = [c for c in children if c.poll() is not None]
        if exited:
            code = exited[0].returncode or 1
            print(f"asyncprof.prefork: worker {exited[0].pid} exited with code {exited[0].returncode}; stopping",
                  file=sys.stderr, flush=True)
            break
        time.sleep(0.2)
    for c in children:
        if c.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                c.send_signal(signal.SIGTERM)
    for c in children:
        c.wait()
    return code


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asyncprof.prefork", description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--workers", type=int, default=1, help="processes to start (default 1)")
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="-- then the command of one worker; {fd} is the socket")
    ns = parser.parse_args(args)
    argv = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
    if not argv or ns.workers < 1:
        parser.error("give --workers N >= 1 and a command after --")
    host, port = parse_bind(ns.bind)
    return serve(host, port, ns.workers, argv)


if __name__ == "__main__":
    sys.exit(main())
