"""What the servers other than gunicorn rely on: the pre-fork launcher, the standalone worker
hooks (lifespan, readiness, server facts) and the per-greenlet accounting under gevent.

Real processes, sockets, loops and greenlets; gevent runs in a subprocess of its own (its
monkey-patching would change the test process for good).
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from asyncprof import prefork
from asyncprof.processes import free_port
from asyncprof.worker import hooks
from asyncprof.worker.env import WorkerEnv

ROOT = Path(__file__).resolve().parents[2]


# --- the pre-fork launcher ----------------------------------------------------------------------


def test_parse_bind() -> None:
    assert prefork.parse_bind("127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert prefork.parse_bind("[::1]:8001") == ("::1", 8001)
    with pytest.raises(ValueError):
        prefork.parse_bind("localhost")
    assert prefork.child_argv(["daphne", "--fd", "{fd}", "app"], 7) == ["daphne", "--fd", "7", "app"]


CHILD = textwrap.dedent("""
    import os, signal, socket, sys
    sock = socket.socket(fileno=int(sys.argv[1]))
    def stop(*_):
        with open(sys.argv[2], "a") as f:
            f.write(f"{os.getpid()}\\n")  # a graceful stop: what a server's flush at exit would do
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    while True:
        conn, _ = sock.accept()
        conn.sendall(str(os.getpid()).encode())
        conn.close()
""")


def _ask(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return int(s.recv(64))


def test_prefork_shares_one_socket_and_stops_every_child_gracefully(tmp_path: Path) -> None:
    port = free_port()
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "asyncprof.prefork", "--bind", f"127.0.0.1:{port}",
                             "--workers", "2", "--", sys.executable, "-c", CHILD, "{fd}", str(stopped)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        deadline = time.monotonic() + 20
        pids: set[int] = set()
        while time.monotonic() < deadline and len(pids) < 2:
            try:
                pids.add(_ask(port))
            except OSError:
                time.sleep(0.05)
        assert len(pids) == 2 and proc.pid not in pids  # the children serve, not the launcher
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert {int(p) for p in stopped.read_text().split()} == pids
    finally:
        if proc.poll() is None:
            proc.kill()


def test_prefork_fails_when_a_child_dies(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "asyncprof.prefork", "--bind", f"127.0.0.1:{port}",
                           "--workers", "2", "--", sys.executable, "-c", "import sys; sys.exit(3)"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=20,
                          capture_output=True, text=True)
    assert proc.returncode == 3 and "exited with code 3" in proc.stderr


# --- standalone workers: readiness, lifespan, server facts --------------------------------------


@pytest.fixture
def worker_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """hooks.ENV pointing at a run directory, instruments off; module state restored after."""
    env = WorkerEnv(run_dir=str(tmp_path), run_id="r", mode="uvicorn", otel=False, profile_every=0,
                    wsgi_app="x:y", asgi_app="x:y", accounting=False, interface="asgi", announce="lifespan")
    monkeypatch.setattr(hooks, "ENV", env)
    monkeypatch.setattr(hooks, "_info", {})
    return tmp_path


class _Cycle:
    """A server's side of the ASGI lifespan protocol."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def test_lifespan_announces_the_worker_and_flushes_at_shutdown(worker_env: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[int] = []
    monkeypatch.setattr(hooks, "shutdown", lambda: flushed.append(os.getpid()))
    seen: list[str] = []

    async def django(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    app = hooks.serve_standalone_asgi(django)

    async def main() -> None:
        cycle = _Cycle()
        task = asyncio.create_task(app({"type": "lifespan"}, cycle.receive, cycle.send))
        await cycle.inbox.put({"type": "lifespan.startup"})
        await asyncio.sleep(0.01)
        assert cycle.sent == [{"type": "lifespan.startup.complete"}]
        info = json.loads((worker_env / "workers" / f"{os.getpid()}.json").read_text())
        assert info["pid"] == os.getpid() and info["loop"] == "asyncio"
        # the first request says which HTTP implementation served it (a uvicorn protocol here)
        send = _UvicornH11Cycle().send
        await app(scope={"type": "http"}, receive=cycle.receive, send=send)  # daphne passes keywords
        await cycle.inbox.put({"type": "lifespan.shutdown"})
        await task
        assert cycle.sent[-1] == {"type": "lifespan.shutdown.complete"} and flushed == [os.getpid()]

    asyncio.run(main())
    assert seen == ["http"]  # Django never sees lifespan
    info = json.loads((worker_env / "workers" / f"{os.getpid()}.json").read_text())
    assert info["http"] == "h11" and info["loop"] == "asyncio"


class _UvicornH11Cycle:
    async def send(self, message: dict[str, Any]) -> None:
        pass


_UvicornH11Cycle.__module__ = "uvicorn.protocols.http.h11_impl"


def test_http_implementation_from_the_servers_send() -> None:
    def owner(module: str) -> Any:
        cls = type("Cycle", (), {"send": lambda self, m: None})
        cls.__module__ = module
        return cls().send

    assert hooks._http_impl(owner("uvicorn.protocols.http.httptools_impl")) == "httptools"
    assert hooks._http_impl(owner("uvicorn.protocols.http.h11_impl")) == "h11"
    assert hooks._http_impl(owner("hypercorn.protocol.http_stream")) == "h11"
    daphne = type("Server", (), {"handle_reply": lambda self, p, m: None})
    daphne.__module__ = "daphne.server"
    assert hooks._http_impl(partial(daphne().handle_reply, None)) == "twisted"


def test_standalone_install_stays_off_under_gunicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "_managed", True)
    monkeypatch.setattr(hooks, "_standalone", False)
    assert hooks.install_standalone() is False


# --- gevent: the accounting follows greenlets ---------------------------------------------------

GEVENT_SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import json, time, gevent
    from asyncprof.worker import greenlet_hooks
    from asyncprof.worker.clocks import perf_counter_ns, run_delay_ns, thread_time_ns
    from asyncprof.worker.record import RequestRecord
    assert greenlet_hooks.install()

    def burn(ms):
        end = time.thread_time() + ms / 1000
        while time.thread_time() < end:
            pass

    out = {}
    def request(name, steps):
        t0, c0, r0 = perf_counter_ns(), thread_time_ns(), run_delay_ns()
        rec = RequestRecord("", name, time.time(), t0)
        greenlet_hooks.begin(rec, t0, c0, r0)
        for kind, ms in steps:
            burn(ms) if kind == "burn" else time.sleep(ms / 1000)
        assert greenlet_hooks.end(rec)
        rec.end_ns = perf_counter_ns()
        out[name] = {k: getattr(rec, k) for k in ("start_ns", "end_ns", "cpu", "run_delay", "offcpu",
                                                  "blocking", "event_loop", "db_wait")}

    # A burns 20 ms, sleeps 10 ms and burns 10 ms; B, started as A sleeps, burns 40 ms without
    # yielding: A's sleep ends while B runs, so A waits ~30 ms more for the hub.
    a = gevent.spawn(request, "a", [("burn", 20), ("sleep", 10), ("burn", 10)])
    b = gevent.spawn(request, "b", [("burn", 40)])
    gevent.joinall([a, b])
    print(json.dumps(out))
""")


def test_gevent_accounting_charges_each_greenlet_only_its_own_time() -> None:
    pytest.importorskip("gevent")
    proc = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr
    recs = json.loads(proc.stdout)
    ms = 1e6
    a, b = recs["a"], recs["b"]
    detail = str({k: {f: round(v / ms, 2) for f, v in r.items() if f not in ("start_ns", "end_ns")}
                  for k, r in recs.items()})
    # CPU: each its own burn, not the other's (under one thread's clock the two would be 70 and 40)
    assert 28 * ms <= a["cpu"] <= 36 * ms, detail
    assert 38 * ms <= b["cpu"] <= 46 * ms, detail
    # A's switched-out time: the 10 ms it asked to sleep is blocking, the wait for B is event_loop
    assert 9 * ms <= a["blocking"] <= 13 * ms, detail
    # (B's burn takes longer on a busy machine by B's own preemption: A waits through that too)
    assert 25 * ms <= a["event_loop"] + a["run_delay"] <= 40 * ms + a["run_delay"] + b["run_delay"], detail
    assert b["blocking"] == 0 and b["event_loop"] < 2 * ms, detail
    for r in recs.values():  # every nanosecond of a request's wall time is in exactly one place
        parts = r["cpu"] + r["run_delay"] + r["offcpu"] + r["blocking"] + r["event_loop"] + r["db_wait"]
        assert abs(parts - (r["end_ns"] - r["start_ns"])) <= 0.5 * ms, detail


def test_a_worker_announces_itself_with_no_garbage_left_from_start_up(worker_env: Path) -> None:
    """One full collection before the load, in every mode: start-up's debt is not paid in a measured window."""
    import gc

    class Cycle:  # unreachable as soon as it is made, but for the collector
        def __init__(self) -> None:
            self.me = self

    gc.disable()
    try:
        for _ in range(1000):
            Cycle()
        assert any(type(o) is Cycle for o in gc.get_objects())
    finally:
        gc.enable()
    hooks.announce_ready()
    assert not any(type(o) is Cycle for o in gc.get_objects())
    info = json.loads((worker_env / "workers" / f"{os.getpid()}.json").read_text())
    assert info["startup_gc_ms"] >= 0
