"""Faults during a run (issue 7): a worker killed mid-run, the database stopped mid-run.

Each test injects the fault into a real recording and checks what the run directory and the
report say about it: the run ends with a clear status, the data up to then is kept, the report
names the fault with numbers, and nothing asyncprof started is left running.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import alive, manifest, only_run, report_json, started_pids

pytestmark = pytest.mark.integration

RUN = ["--duration", "7", "--warmup", "1", "--users", "6", "--workers", "2", "--profile-every", "5"]


def _start(traces: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.Popen([sys.executable, "-m", "asyncprof", "record", "--out", str(traces), *RUN, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**base, **(env or {})})


def _measuring(traces: Path, proc: subprocess.Popen[str], seconds: float = 2.5) -> dict[str, Any]:
    """Wait until the measured window is open, then *seconds* more; the manifest then."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        runs = [p for p in traces.iterdir() if (p / "manifest.json").exists()]
        if runs and "window" in (m := manifest(runs[0])):
            time.sleep(seconds)
            return m
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the measured window never opened")


def _finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_worker_killed_mid_run_is_replaced_sampled_and_reported(mode: str, traces: Path) -> None:
    # py-spy at 10 Hz, not record's 5: at 5 Hz it once sampled no stack of the replacement worker
    # in the few seconds left of this short window.
    proc = _start(traces, "--mode", mode, "--pyspy-rate", "10")
    m = _measuring(traces, proc, 1.5)  # early enough for the new worker to be sampled in the window
    victim = m["pids"]["workers"][0]
    os.kill(victim, signal.SIGKILL)
    out, err = _finish(proc)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err, err[-3000:]

    run = only_run(traces)
    m = manifest(run)
    assert m["status"] == "complete"
    died = [f for f in m["faults"] if f["kind"] == "worker_died"]
    assert [f["pid"] for f in died] == [victim], m["faults"]
    new = died[0]["replaced_by"]
    assert isinstance(new, int) and new != victim, m["faults"]
    assert new in m["pids"]["workers"] and (run / "workers" / f"{new}.json").exists()
    assert new in [w["pid"] for w in m["workers"]]
    # The recorder starts a py-spy on the new worker as soon as it is forked.  Its stacks are in the
    # samples when it ran Python in the window: a sync worker serves its share of the users; an
    # async one may get no connection at all (keep-alive users stay on the surviving worker's loop),
    # and py-spy --gil has nothing to sample then.
    assert new in m["instruments"]["pyspy"]["processes"]
    samples = (run / "pyspy" / "samples.txt").read_text()
    if mode == "sync":
        assert f"process {new}:" in samples

    r = report_json(run)
    fault = next(f for f in r["faults"] if f["kind"] == "worker_died")
    assert fault["pid"] == victim and fault["replaced_by"] == new and fault["signal"] == "SIGKILL"
    assert 0 < fault["t_s"] < 7
    assert fault["failed_requests"] is not None and fault["failed_requests"] <= r["errors"] < r["requests"]
    if mode == "sync":
        assert str(new) in r["instruments"]["pyspy"]["samples_by_pid"]
    finding = next(f for f in r["findings"] if f["evidence"].get("kind") == "worker_died")
    assert f"worker PID {victim} died mid-run (signal 9, SIGKILL)" in finding["detail"]
    assert f"replaced by PID {new}" in finding["detail"]
    assert re.search(rf"{fault['failed_requests']} requests? failed around {fault['t_s']:.1f} s", finding["detail"])
    assert finding["try"] and r["valid"] is False
    text = subprocess.run([sys.executable, "-m", "asyncprof", "report", str(run)], capture_output=True, text=True)
    assert f"Worker {victim} died mid-run" in text.stdout
    assert not any(alive(pid) for pid in started_pids(m))
    print(json.dumps({"mode": mode, "fault": fault, "errors": r["errors"], "requests": r["requests"]}))


def _private_pgdata() -> Path:
    """A data directory of this test's own: stopping its server disturbs no other run's database."""
    return Path(tempfile.gettempdir()) / f"asyncprof-test-faults-pgdata-{os.getuid()}"


@pytest.mark.parametrize("mode", ["sync", "async"])  # psycopg2 and asyncpg
def test_database_stopped_mid_run_fails_the_run_with_a_reason_and_keeps_the_data(mode: str, traces: Path) -> None:
    pgdata = _private_pgdata()
    proc = _start(traces, "--mode", mode, "--db", "embedded", "--rows", "1000",
                  env={"ASYNCPROF_PGDATA": str(pgdata)})
    m = _measuring(traces, proc)
    postmaster = m["database"]["pid"]
    assert postmaster == int((pgdata / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGINT)  # fast shutdown: clients are disconnected, the server exits
    out, err = _finish(proc)
    assert proc.returncode == 3, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    assert "the database stopped during the run" in err, err[-2000:]

    run = only_run(traces)
    m = manifest(run)
    assert m["status"] == "failed"
    assert "the database stopped during the run" in m["error"] and str(postmaster) in m["error"]
    assert [f["kind"] for f in m["faults"]] == ["database_lost"]
    assert not alive(postmaster)
    assert not any(alive(pid) for pid in started_pids(m))

    r = report_json(run)  # the report reads a failed run
    assert r["status"] == "failed"
    assert 0 < r["errors"] < r["requests"], (r["errors"], r["requests"], r["errors_by_class"], m["faults"])
    classes = {c["class"]: c["requests"] for c in r["errors_by_class"]}
    assert classes.get("database unavailable", 0) > 0, classes
    fault = r["faults"][0]
    assert fault["kind"] == "database_lost" and 0 < fault["t_s"] < 7, fault
    assert fault["failed_requests"] == classes["database unavailable"] <= fault["requests_after"]
    assert any(e["database"] for e in r["server_errors"]), r["server_errors"]
    finding = r["findings"][0]
    assert finding["title"] == "Database unavailable mid-run" and finding["try"], r["findings"]
    assert r["valid"] is False
    # The requests before the database went are all there, and succeeded.
    assert r["requests"] - r["errors"] > 0
    print(json.dumps({"mode": mode, "fault": fault, "classes": classes, "errors": r["errors"], "requests": r["requests"],
                      "server_errors": r["server_errors"]}))


# --- the analysis alone, on synthetic run directories (fast) ------------------------------------------


def _synthetic(tmp_path: Path, faults: list[dict[str, Any]] | None, server_log: str,
               reqs: list[Any]) -> dict[str, Any]:
    from asyncprof.analysis.report import build_report
    from tests.unit.synthetic import make_run, write_requests

    run = make_run(tmp_path / str(len(list(tmp_path.iterdir()))), accounting=False,
                   **({"faults": faults} if faults is not None else {}))
    write_requests(run, reqs)
    (run.logs_dir / "server.log").write_text(server_log)
    return build_report(run)


def test_report_classifies_errors_by_fault_and_reads_worker_deaths_from_the_log(tmp_path: Path) -> None:
    from tests.unit.synthetic import Req, trace

    reqs = [Req(trace(i), 10.0, start=1000.0 + i * 0.1) for i in range(100)]
    reqs[30] = Req(trace(30), 5.0, start=1003.0, status=0, error="ConnectionResetError(104)")  # the kill, at 1003.1
    reqs[60] = Req(trace(60), 5.0, start=1006.0, status=500, error="LocustBadStatusCode(code=500)")  # db gone
    reqs[61] = Req(trace(61), 5.0, start=1006.1, status=500, error="LocustBadStatusCode(code=500)")
    reqs[90] = Req(trace(90), 5.0, start=1009.0, status=404, error="LocustBadStatusCode(code=404)")
    log = ("[2026-11-29 03:32:45 +0000] [20797] [ERROR] Worker (pid:41) was sent SIGKILL! Perhaps out of memory?\n"
           "[2026-11-29 03:32:49 +0000] [20797] [ERROR] Worker (pid:77) exited with code 3.\n"
           "Internal Server Error: /async/seed/\nTraceback (most recent call last):\n"
           '  File "/x/asyncpg/connect_utils.py", line 1, in _connect\n'
           "asyncpg.exceptions.CannotConnectNowError: the database system is shutting down\n")
    faults = [{"kind": "worker_died", "pid": 41, "unix": 1003.1, "replaced_by": 43, "replacement_ready_unix": 1004.0},
              {"kind": "database_lost", "unix": 1006.2, "detail": "the embedded PostgreSQL (postmaster pid 9) exited"}]
    r = _synthetic(tmp_path, faults, log, reqs)
    assert {c["class"]: c["requests"] for c in r["errors_by_class"]} == {
        "database unavailable": 2, "worker died": 1, "HTTP 404": 1}
    died = {f["pid"]: f for f in r["faults"] if f["kind"] == "worker_died"}
    assert died[41]["signal"] == "SIGKILL" and died[41]["t_s"] == pytest.approx(3.1)
    assert died[41]["replacement_after_s"] == pytest.approx(0.9) and died[41]["failed_requests"] == 1
    assert 77 not in died  # only in the log: it ended while the server stopped, outside the recorder's watch
    assert r["server_errors"] == [{"error": "asyncpg.exceptions.CannotConnectNowError: the database system is "
                                   "shutting down", "count": 1, "database": True}]
    details = [f["detail"] for f in r["findings"]]
    assert any("worker PID 41 died mid-run (signal 9, SIGKILL) 3.1 s into the measured window and was replaced "
               "by PID 43, ready 0.9 s later; 1 request failed around 3.1 s" in d for d in details), details
    assert any(d.startswith("the database stopped 6.2 s into the measured window") for d in details), details
    assert r["valid"] is False and all(f["try"] for f in r["findings"])

    # A run recorded before the recorder watched its workers: the server log is all there is.
    old = _synthetic(tmp_path, None, log, reqs)
    died = {f["pid"]: f for f in old["faults"] if f["kind"] == "worker_died"}
    assert died[41]["signal"] == "SIGKILL" and died[77]["exit_code"] == 3 and died[77]["t_s"] is None
    details = [f["detail"] for f in old["findings"]]
    assert any("worker PID 77 died mid-run (exit code 3) during the run" in d for d in details), details


def test_report_without_faults_says_nothing_new(tmp_path: Path) -> None:
    from tests.unit.synthetic import Req, trace

    r = _synthetic(tmp_path, [], "", [Req(trace(i), 10.0, start=1000.0 + i * 0.1) for i in range(50)])
    assert r["faults"] == [] and r["errors_by_class"] == [] and r["server_errors"] == []
    assert not any(f["evidence"].get("kind") in ("worker_died", "database_lost") for f in r["findings"])


def test_watch_probes_an_unreachable_database_only_while_requests_fail(tmp_path: Path) -> None:
    """The external-database path: no pid to watch, so failing requests trigger a connection probe."""
    from asyncprof.collectors.server import DATABASE_LOST_GRACE, DatabaseLostError, ServerWatch
    from tests.unit.synthetic import make_run

    class Running:
        def running(self) -> bool:
            return True

    run = make_run(tmp_path, database={"kind": "external"})
    watch = ServerWatch(run, Running(), db_url="postgresql://u:s3cret@127.0.0.1:1/x")  # type: ignore[arg-type]
    now = time.time()
    watch.check(now, errors=0)  # nothing failed: no probe, no fault
    assert run.manifest["faults"] == []
    watch.check(now + 0.25, errors=3)
    fault = manifest(run.path)["faults"][0]
    assert fault["kind"] == "database_lost" and "cannot connect to PostgreSQL" in fault["detail"]
    assert "s3cret" not in (run.path / "manifest.json").read_text()
    with pytest.raises(DatabaseLostError, match="the database stopped during the run"):
        watch.check(now + 0.25 + DATABASE_LOST_GRACE, errors=5)
