"""``asyncprof attach`` against a gunicorn this test starts (the shop fixture project), never stopped by asyncprof.

The server is the second Django project under ``tests/fixtures/shopapp`` (its own settings,
middleware, model and migrations), migrated into this machine's PostgreSQL service, served by
gunicorn with 2 sync workers on a free loopback port.  asyncprof did not start it, so it is a
sibling of the ``asyncprof`` process, not its child: py-spy needs ptrace rights over it (root or
CAP_SYS_PTRACE here).
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncprof.collectors.proctree import descendants
from asyncprof.processes import free_port
from tests.integration.helpers import alive, asyncprof, manifest, only_run, report_json

pytestmark = pytest.mark.integration

SHOP = Path(__file__).resolve().parent.parent / "fixtures" / "shopapp"


def _get(url: str, timeout: float = 2.0) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        resp.read()
        return int(resp.status)


def _migrate(env: dict[str, str]) -> None:
    """The shop's migrations; once more on failure (another test may be migrating the same database)."""
    for attempt in (1, 2):
        proc = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=SHOP, env=env,
                              capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            return
        if attempt == 2:
            pytest.fail(f"the shop's migrations failed: {proc.stdout[-1000:]}{proc.stderr[-2000:]}")
        time.sleep(1)


@pytest.fixture(scope="module")
def shop_server(service_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(gunicorn master pid, port): 2 sync workers serving the shop; stopped by pid at the end."""
    env = {**os.environ, "DATABASE_URL": service_url, "PYTHONUNBUFFERED": "1"}
    _migrate(env)
    port = free_port()
    log_path = tmp_path_factory.mktemp("shop") / "gunicorn.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
                             "--log-level", "warning", "shopsite.wsgi:application"],
                            cwd=SHOP, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if _get(f"http://127.0.0.1:{port}/health/") == 200 and len(descendants(proc.pid)) == 2:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not serve the shop within 60 s"
            time.sleep(0.2)
        yield proc.pid, port
    finally:
        with_children = [proc.pid, *descendants(proc.pid)]
        proc.send_signal(signal.SIGTERM)  # ours: the test started it
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        for pid in with_children[1:]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()


def _started_by_asyncprof(m: dict) -> list[int]:
    pids = m.get("pids", {})
    return [p for p in (pids.get("locust"), pids.get("pyspy")) if p]


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_attach_with_load(shop_server: tuple[int, int], traces: Path) -> None:
    pid, port = shop_server
    workers = descendants(pid)
    proc = asyncprof("attach", "--pid", str(pid), "--url", f"http://127.0.0.1:{port}", "--duration", "4",
                     "--warmup", "1", "--users", "5", "--path", "/items/", "--out", str(traces), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(traces)
    m = manifest(run)
    assert m["kind"] == "attach" and m["status"] == "complete"
    assert m["server"]["server"] == "gunicorn" and m["server"]["mode"] == "sync"
    assert sorted(m["target"]["workers"]) == sorted(workers)
    assert set(m["config"]["app_packages"]) >= {"shopsite", "catalog"}
    r = report_json(run)
    assert r["kind"] == "attach"
    assert r["throughput_rps"] > 0 and r["errors"] == 0, r["warnings"]
    assert [e["name"] for e in r["endpoints"]] == ["/items/"]
    assert r["cpu_profile"] is not None, r["warnings"]
    by_pid = {int(p): n for p, n in r["instruments"]["pyspy"]["samples_by_pid"].items()}
    assert set(by_pid) <= set(workers) and sum(by_pid.values()) > 0, (by_pid, workers)
    assert r["missing"] and "no per-request breakdown" in r["missing"][0]
    assert "a server asyncprof did not start" in r["warnings"][0]
    assert r["attribution_ms"] is None
    assert r["capacity"]["cpu_ms_per_request"] is not None
    # The server is untouched; what asyncprof started is gone.
    assert alive(pid) and sorted(descendants(pid)) == sorted(workers)
    assert not any(alive(p) for p in _started_by_asyncprof(m))
    assert _get(f"http://127.0.0.1:{port}/items/") == 200


def test_attach_without_load_observes_other_traffic(shop_server: tuple[int, int], traces: Path) -> None:
    pid, port = shop_server
    stop = threading.Event()

    def traffic() -> None:  # "production traffic" that asyncprof does not send
        while not stop.is_set():
            try:
                _get(f"http://127.0.0.1:{port}/items/")
            except OSError:
                time.sleep(0.05)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        proc = asyncprof("attach", "--pid", str(pid), "--no-load", "--duration", "3", "--warmup", "0",
                         "--out", str(traces), timeout=120)
    finally:
        stop.set()
        thread.join(5)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(traces)
    assert not (run / "logs" / "locust.log").exists()
    r = report_json(run)
    assert r["load"]["model"] == "none" and r["requests"] == 0
    assert r["throughput_rps"] is None
    assert any("no client latency" in line for line in r["missing"])
    assert sum(r["instruments"]["pyspy"]["samples_by_pid"].values()) > 0, r["warnings"]
    assert r["cpu_profile"] is not None
    assert alive(pid) and len(descendants(pid)) == 2


def test_ctrl_c_stops_what_attach_started_and_not_the_server(shop_server: tuple[int, int], traces: Path) -> None:
    pid, port = shop_server
    args = [sys.executable, "-m", "asyncprof", "attach", "--pid", str(pid), "--url", f"http://127.0.0.1:{port}",
            "--duration", "60", "--warmup", "0", "--users", "3", "--path", "/items/", "--out", str(traces)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = [p for p in traces.iterdir() if (p / "manifest.json").exists()]
            if runs and "cpu_window" not in manifest(runs[0]) and "window" in manifest(runs[0]):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    m = manifest(only_run(traces))
    assert m["status"] == "interrupted"
    assert not any(alive(p) for p in _started_by_asyncprof(m))
    assert alive(pid) and len(descendants(pid)) == 2
    assert report_json(only_run(traces))["status"] == "interrupted"


def test_bad_pid_is_one_line(traces: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    proc = asyncprof("attach", "--pid", str(gone.pid), "--url", "http://127.0.0.1:1", "--out", str(traces))
    assert proc.returncode == 2
    assert f"no process with pid {gone.pid}" in _error_line(proc)
    assert not list(traces.iterdir())  # nothing written


@pytest.mark.parametrize(("url", "says"), [("http://127.0.0.1:{closed}", "unreachable"),
                                           ("ftp://127.0.0.1:{port}", "not an http")])
def test_bad_url_is_one_line(shop_server: tuple[int, int], traces: Path, url: str, says: str) -> None:
    pid, port = shop_server
    proc = asyncprof("attach", "--pid", str(pid), "--url", url.format(port=port, closed=free_port()),
                     "--out", str(traces))
    assert proc.returncode == 2
    assert says in _error_line(proc)
    assert not list(traces.iterdir())
    assert alive(pid)


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs root and setpriv")
def test_ptrace_denied_is_one_line(shop_server: tuple[int, int], traces: Path) -> None:
    """Without CAP_SYS_PTRACE (dropped from the bounding set) root may not trace a process with more capabilities."""
    pid, port = shop_server
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.run(["setpriv", "--bounding-set", "-sys_ptrace", "--inh-caps", "-sys_ptrace", "--",
                           sys.executable, "-m", "asyncprof", "attach", "--pid", str(pid),
                           "--url", f"http://127.0.0.1:{port}", "--out", str(traces)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    line = _error_line(proc)
    assert f"not permitted to profile pid {pid}" in line and "CAP_SYS_PTRACE" in line
    assert not list(traces.iterdir())
    assert alive(pid)
