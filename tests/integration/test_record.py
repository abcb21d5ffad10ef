"""Record short real runs (PostgreSQL, gunicorn/uvicorn workers, Locust, py-spy) and check the run directory."""

import json
from pathlib import Path

import pytest

from asyncprof.analysis.requests import read_request_log
from asyncprof.analysis.spans import SPAN_KIND_SERVER, iter_spans
from tests.integration.helpers import SHORT, alive, asyncprof, manifest, only_run, report_json, started_pids

pytestmark = pytest.mark.integration


def _check_run(run: Path, mode: str) -> dict:
    m = manifest(run)
    assert m["status"] == "complete"
    assert m["config"]["mode"] == mode
    assert m["database"]["server_version"]
    assert m["versions"]["django"].startswith("5.2")
    assert m["window"]["end_unix"] > m["window"]["start_unix"]
    workers = [w["pid"] for w in m["workers"]]
    assert len(workers) == 2
    for name in ("requests.tsv", "locust/stats_stats.csv", "pyspy/samples.txt", "pyspy/speedscope.json"):
        assert (run / name).stat().st_size > 0, name
    json.loads((run / "pyspy/speedscope.json").read_text())
    assert {p.stem for p in (run / "spans").glob("*.jsonl")} == {str(w) for w in workers}

    r = report_json(run)
    assert r["requests"] > 50
    assert r["errors"] == 0
    assert r["throughput_rps"] > 0
    assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
    assert [e["name"] for e in r["endpoints"]] == [f"{r['view']}/seed"]
    assert r["instruments"]["otel"]["matched_requests"] >= 0.99 * r["requests"]
    sampled = r["instruments"]["pyspy"]["samples_by_pid"]
    # With --gil only a worker running Python is sampled: every worker that served a real share of
    # the measured window (keep-alive connections can leave one worker nearly idle on a short run).
    served = _served_in_window(run, m)
    busy = [pid for pid, n in served.items() if n >= 0.1 * r["requests"]]
    assert busy and all(sampled.get(str(pid), 0) > 0 for pid in busy), (sampled, served)
    assert r["instruments"]["pyinstrument"]["profiles"] >= 1
    # The profiler ran where the view runs (under ASGI: in the request's task, not a hop thread).
    view = f"seed_{r['view']}"
    profiles = [p.read_text() for p in (run / "profiles").glob("*.pyisession")]
    assert any(view in text for text in profiles), f"no profile contains {view}"
    assert all(json.loads(text)["frame_records"] is not None for text in profiles)
    # The breakdown: every measured request has its server record, and the categories explain it.
    assert r["accounting"]["match_rate"] >= 0.99, r["accounting"]
    a = r["attribution_ms"]
    latency = r["latency_ms"]["mean"]
    assert abs(sum(a.values()) - latency) <= 0.05 * latency, (a, latency)
    assert abs(a["other"]) <= 0.05 * latency, a
    assert a["cpu"] > 0 and a["db_wait"] > 0
    assert r["queries_per_request"] >= 2
    if mode == "async":  # Django's stock middleware crosses sync<->async under ASGI
        assert r["hops_per_request"] >= 2 and a["thread_hop"] > 0
    else:
        assert r["hops_per_request"] == 0 and a["thread_hop"] == 0 and a["event_loop"] == 0
    assert r["capacity"]["measured_rps"] and r["capacity"]["cpu_ms_per_request"] > 0
    assert not any(alive(pid) for pid in started_pids(m)), "a process asyncprof started is still running"
    return r


def _served_in_window(run: Path, m: dict) -> dict[int, int]:
    """Requests of the measured window each worker served, from its server spans."""
    window = m["window"]
    log = read_request_log(run / "requests.tsv").window(window["start_unix"], window["end_unix"])
    wanted = set(log.trace_id)
    served: dict[int, int] = {}
    for attrs, span in iter_spans(run / "spans"):
        if span.get("kind") == SPAN_KIND_SERVER and span.get("traceId") in wanted:
            pid = int(attrs["process.pid"])
            served[pid] = served.get(pid, 0) + 1
    return served


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_record_on_embedded_postgres(mode: str, traces: Path) -> None:
    proc = asyncprof("record", "--mode", mode, "--db", "embedded", "--out", str(traces), *SHORT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = only_run(traces)
    r = _check_run(run, mode)
    assert manifest(run)["database"]["kind"] == "embedded"
    assert f"{r['requests']} requests" in proc.stdout


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_record_on_postgres_service(mode: str, traces: Path, service_url: str) -> None:
    proc = asyncprof("record", "--mode", mode, "--db", service_url, "--out", str(traces), *SHORT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = only_run(traces)
    _check_run(run, mode)
    assert manifest(run)["database"]["kind"] == "external"


def test_record_orm_scenario_with_instruments_off(traces: Path, service_url: str) -> None:
    proc = asyncprof("record", "--mode", "async", "--scenario", "orm", "--db", service_url, "--out", str(traces),
                     "--no-pyspy", "--no-otel", "--no-pyinstrument", "--no-accounting", *SHORT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = only_run(traces)
    r = report_json(run)
    assert r["errors"] == 0 and r["requests"] > 20
    assert "every request" in manifest(run)["connections"]
    assert r["endpoints"][0]["name"] == "async/orm"
    assert r["instruments"]["pyspy"]["samples"] == 0
    assert r["instruments"]["otel"]["spans"] == 0
    assert any("pyspy was off" in w for w in r["warnings"])
    assert r["attribution_ms"] is None and any("accounting" in w for w in r["warnings"])


@pytest.mark.parametrize(("mode", "scenario"), [("sync", "page"), ("async", "page"), ("sync", "cpu"), ("async", "cpu")])
def test_page_and_cpu_scenarios(mode: str, scenario: str, traces: Path, service_url: str) -> None:
    proc = asyncprof("record", "--mode", mode, "--scenario", scenario, "--db", service_url, "--out", str(traces),
                     "--no-pyspy", "--no-pyinstrument", *SHORT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = only_run(traces)
    r = report_json(run)
    assert r["errors"] == 0 and r["requests"] > 20
    assert [e["name"] for e in r["endpoints"]] == [f"{r['view']}/{scenario}"]
    a = r["attribution_ms"]
    if scenario == "cpu":  # no database at all, and the time is the view's CPU
        assert r["queries_per_request"] == 0 and a["db_wait"] == 0 and a["cpu"] > 1.0
    else:
        assert r["queries_per_request"] >= 2
