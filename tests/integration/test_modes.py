"""Every worker mode records the seed scenario with the same pipeline: a few seconds each.

A mode whose server is not installed is skipped, saying which extra installs it.
"""

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from asyncprof.errors import UsageError
from asyncprof.modes import get_mode
from tests.integration.helpers import SHORT, alive, asyncprof, manifest, only_run, report_json, started_pids

pytestmark = pytest.mark.integration

MODES = ("gthread", "gevent", "uvicorn", "hypercorn", "daphne", "granian-asgi", "granian-wsgi")
SERVER = {"gthread": "gunicorn", "gevent": "gunicorn", "uvicorn": "uvicorn", "hypercorn": "hypercorn",
          "daphne": "daphne", "granian-asgi": "granian", "granian-wsgi": "granian"}


def _record(mode: str, traces: Path, *extra: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    try:
        get_mode(mode).check_installed()
    except UsageError as exc:
        pytest.skip(f"{exc} ({exc.hint})")
    proc = asyncprof("record", "--mode", mode, "--db", "embedded", "--out", str(traces), *SHORT, *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = only_run(traces)
    m = manifest(run)
    r = report_json(run)
    assert m["status"] == "complete" and m["config"]["mode"] == mode
    assert r["errors"] == 0 and r["requests"] > 0, (r["errors"], r["requests"])
    assert [e["name"] for e in r["endpoints"]] == [f"{get_mode(mode).default_view}/seed"]
    # every worker announced itself, wrote its spans, its records and its summary, and was stopped
    workers = {str(w["pid"]) for w in m["workers"]}
    assert len(workers) == 2 and all(w["server"] == SERVER[mode] for w in m["workers"]), m["workers"]
    assert {p.stem for p in (run / "spans").glob("*.jsonl")} == workers
    assert {p.stem for p in (run / "accounting").glob("*.json")} == workers
    # spans and the accounting matched to the client's requests, as in test_record
    assert r["instruments"]["otel"]["matched_requests"] >= 0.99 * r["requests"], r["instruments"]["otel"]
    assert r["accounting"]["match_rate"] >= 0.99, r["accounting"]
    a, latency = r["attribution_ms"], r["latency_ms"]["mean"]
    assert abs(sum(a.values()) - latency) <= 0.05 * latency, (a, latency)
    assert a["cpu"] > 0 and a["db_wait"] > 0, a
    assert r["queries_per_request"] >= 2
    assert sum(r["instruments"]["pyspy"]["samples_by_pid"].get(pid, 0) for pid in workers) > 0
    assert not any(alive(pid) for pid in started_pids(m)), "a process asyncprof started is still running"
    return run, m, r


@pytest.mark.parametrize("mode", [m for m in MODES if m not in ("gthread", "gevent", "uvicorn")])
def test_mode_records_the_seed_scenario(mode: str, traces: Path) -> None:
    _run, m, r = _record(mode, traces)
    if get_mode(mode).interface == "asgi":  # Django's stock middleware crosses sync<->async under ASGI
        assert r["hops_per_request"] >= 2
        # Standalone servers describe their loop and HTTP implementation at a worker's first request,
        # and on a short run with keep-alive connections one worker may never get one.
        described = [w for w in m["workers"] if w.get("http")]
        # granian's --loop auto takes uvloop when it is installed; hypercorn and daphne run asyncio's loop.
        loop = "uvloop" if mode.startswith("granian") and importlib.util.find_spec("uvloop") else "asyncio"
        assert described and all(w.get("loop") == loop for w in described), m["workers"]
    else:
        assert r["hops_per_request"] == 0


def test_gthread_runs_the_threads_asked_for(traces: Path) -> None:
    run, m, r = _record("gthread", traces, "--threads", "3")
    assert m["config"]["threads"] == 3 and m["server"]["threads"] == 3
    assert "--threads" in m["server"]["command"]
    assert all(w["worker_class"] == "ThreadWorker" and w["threads"] == 3 for w in m["workers"])
    assert r["hops_per_request"] == 0


def test_uvicorn_reports_the_loop_and_parser_that_ran(traces: Path) -> None:
    _run, m, r = _record("uvicorn", traces)
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    described = [w for w in m["workers"] if w.get("http")]  # a worker left idle by keep-alive says nothing
    assert described and all(w["loop"] == loop and w["http"] == http for w in described), m["workers"]
    assert r["hops_per_request"] >= 2


def test_gevent_makes_psycopg2_cooperative_and_accounts_per_greenlet(traces: Path) -> None:
    run, m, r = _record("gevent", traces)
    for path in (run / "accounting").glob("*.json"):
        summary = json.loads(path.read_text())
        # psycopg2's wait callback waits in gevent's select: the worker's other greenlets run meanwhile
        assert summary["concurrency"] == "gevent" and summary["psycopg2_select"] == "gevent.select.select"
    # each request is charged its own greenlet's CPU, not the worker's: no more than the kernel saw
    capacity = r["capacity"]
    assert capacity["accounted_cpu_ms_per_request"] <= 1.1 * capacity["cpu_ms_per_request"], capacity
    assert abs(r["attribution_ms"]["other"]) <= 0.05 * r["latency_ms"]["mean"], r["attribution_ms"]
