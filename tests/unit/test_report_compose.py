"""The full report on synthetic run directories: composition, degradation, rendering, the CLI."""

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from asyncprof.analysis.categories import CATEGORIES
from asyncprof.analysis.report import build_report
from asyncprof.analysis.summary import summarize
from asyncprof.cli import main
from asyncprof.renderers import render_report
from asyncprof.renderers.terminal import WIDTH, report_table
from asyncprof.run import Run
from asyncprof.worker.record_format import ACCOUNTING_DIR
from tests.unit.synthetic import Req, make_run, trace, write_records, write_requests, write_summary

NEW_KEYS = ("attribution_ms", "attribution_p99_ms", "hops_per_request", "queries_per_request", "cpu_profile",
            "cpu_profile_top", "findings", "capacity", "valid", "accounting")
NULL_WITHOUT_ACCOUNTING = ("attribution_ms", "attribution_p99_ms", "hops_per_request", "queries_per_request")

ROOT = 'process 10:"gunicorn";process 11:"gunicorn";thread (1): MainThread'
LOOP = ("UvicornWorker.run (uvicorn_worker/_workers.py:90);run (asyncio/runners.py:190);"
        "BaseEventLoop._run_once (asyncio/base_events.py:1922);Handle._run (asyncio/events.py:80)")
SAMPLES = [
    f"{ROOT};{LOOP};item_list (asyncprof_target/views.py:12) 20",
    f"{ROOT};{LOOP};SyncToAsync.__call__ (asgiref/sync.py:567);Thread.start (threading.py:970) 50",
    f"{ROOT};{LOOP};H11Protocol.data_received (uvicorn/protocols/http/h11_impl.py:200) 30",
    f"{ROOT};{LOOP};EpollSelector.select (selectors.py:468) 100",  # idle: not on CPU
]


def requests(n: int = 100) -> list[Req]:
    return [Req(trace(i), latency_ms=12.0 + (i % 10), name="/items/" if i % 2 else "/items/{id}",
                start=1001.0 + i * 0.05,
                us={"wall_us": 10_000 + (i % 10) * 1000, "cpu_us": 3_000, "db_wait_us": 2_000, "thread_hop_us": 2_500,
                    "event_loop_us": 1_000, "hops": 4, "queries": 2})
            for i in range(1, n + 1)]


def full_run(parent: Path, **manifest: Any) -> Run:
    cpu_window = {"seconds": 10.0, "workers_cpu_s": {"11": 0.2, "12": 0.2}, "server_master_cpu_s": 0.01,
                  "pyspy_cpu_s": 0.1, "locust_cpu_s": 0.5, "machine_busy_share": 0.3}
    run = make_run(parent, cpu_window=cpu_window, **manifest)
    reqs = requests()
    write_requests(run, reqs)
    write_records(run, 11, reqs[:50])
    write_records(run, 12, reqs[50:])
    for pid in (11, 12):
        write_summary(run, pid, requests=50, hop_sites={"Signal.send": 100, "SessionMiddleware.process_request": 50,
                                                        "CsrfViewMiddleware.process_view": 50},
                      loop_thread_cpu_s=0.15, hook_cost_us_per_request=12.0)
    (run.pyspy_dir / "samples.txt").write_text("\n".join(SAMPLES) + "\n")
    return run


def assert_renders(report: dict[str, Any]) -> str:
    text = render_report("terminal", report)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    assert json.loads(render_report("json", report)) == orjson.loads(orjson.dumps(report))
    return text


def test_full_report(tmp_path: Path) -> None:
    report = build_report(full_run(tmp_path))
    for key in NEW_KEYS:
        assert key in report
    att = report["attribution_ms"]
    assert math.fsum(att.values()) == pytest.approx(report["latency_ms"]["mean"], abs=1e-2)
    assert att["cpu"] == 3.0 and att["thread_hop"] == 2.5
    assert report["hops_per_request"] == 4.0 and report["queries_per_request"] == 2.0
    assert report["attribution_p99_ms"]["other"] == pytest.approx(19.0 - 8.5, abs=1e-3)  # a 19 ms wall, 8.5 ms known
    for ep in report["endpoints"]:
        assert ep["matched_requests"] == 50 and ep["attribution_ms"]["cpu"] == 3.0
    acc = report["accounting"]
    assert acc["matched_requests"] == 100 and acc["match_rate"] == 1.0 and acc["skipped_lines"] == 0
    assert acc["workers"]["hop_sites"]["Signal.send"] == 200

    shares = report["cpu_profile"]
    assert set(shares) == set(CATEGORIES) and math.fsum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert shares["thread_pool"] == 0.5 and shares["app"] == 0.2 and shares["http_server"] == 0.3
    assert report["cpu_profile_top"]["app"][0]["function"].startswith("item_list")
    assert report["instruments"]["pyspy"]["on_cpu_samples"] == 100

    titles = [f["title"] for f in report["findings"]]
    assert "Thread hops from sync code under ASGI" in titles and "Pure-Python HTTP parsing" in titles
    hops = next(f for f in report["findings"] if f["title"].startswith("Thread hops"))
    assert hops["evidence"]["hop_sites"][0] == {"site": "Signal.send", "count": 200, "per_request": 2.0}
    shares_sorted = [f["share"] for f in report["findings"]]
    assert shares_sorted == sorted(shares_sorted, reverse=True)
    assert report["valid"] is True and report["invalid_reasons"] == []

    cap = report["capacity"]
    assert cap["cpu_ms_per_request"] == 4.0  # 0.4 CPU s / 100 requests
    assert cap["measured_rps"] == 10.0 and cap["limits_rps"]["cpu"] == 1000.0  # 4 cores / 4 ms
    # 0.3 s of loop-thread CPU for 100 requests: 3 ms each, so 2 loops allow 667 req/s, the lower bound.
    assert cap["loop_cpu_ms_per_request"] == 3.0 and cap["predicted_max_rps"] == pytest.approx(666.7)
    assert cap["cpu_check"]["within_tolerance"] is True

    text = assert_renders(report)
    for section in ("Where the time went", "slowest 1%", "CPU profile", "Findings", "Capacity:", "Thread hops"):
        assert section in text


def test_accounting_off_degrades_with_a_warning(tmp_path: Path) -> None:
    run = make_run(tmp_path, accounting=False)
    write_requests(run, requests(10))
    report = build_report(run)
    for key in NULL_WITHOUT_ACCOUNTING + ("cpu_profile", "cpu_profile_top"):
        assert report[key] is None, key
    assert all(ep["attribution_ms"] is None for ep in report["endpoints"])
    assert "accounting was off for this run: its data is missing from the report" in report["warnings"]
    assert report["findings"] == [] and report["valid"] is True
    assert report["capacity"]["bottleneck"] == "none/unknown"
    assert_renders(report)


@pytest.mark.parametrize(("setup", "says"), [
    ("on_no_files", "no worker wrote accounting/<pid>.tsv"),
    ("old_run", "recorded before per-request accounting existed"),
    ("no_match", "none of the 3 accounting records matches"),
    ("header_only", "hold no readable record"),
])
def test_missing_accounting_says_why(tmp_path: Path, setup: str, says: str) -> None:
    run = make_run(tmp_path)
    reqs = requests(3)
    write_requests(run, reqs)
    if setup == "old_run":
        del run.manifest["instruments"]["accounting"]
        run.save()
    elif setup == "no_match":
        write_records(run, 11, [Req(trace(900 + i), 1.0, us={"wall_us": 1}) for i in range(3)])
    elif setup == "header_only":
        write_records(run, 11, [])
    report = build_report(run)
    assert report["attribution_ms"] is None
    assert any(says in w for w in report["warnings"]), report["warnings"]
    assert_renders(report)


def test_interrupted_run_with_torn_files(tmp_path: Path) -> None:
    run = make_run(tmp_path, status="interrupted", window={"start_unix": 1000.0})  # never reached its end
    reqs = requests(20)
    write_requests(run, reqs)
    path = write_records(run, 11, reqs[:15])
    with open(path, "a") as f:
        f.write(reqs[15].record_line()[:40])  # killed mid-write
    (run.path / ACCOUNTING_DIR / "12.json").write_text('{"pid": 12, "requests": ')  # torn summary
    report = build_report(run)
    assert report["accounting"]["matched_requests"] == 15 and report["accounting"]["skipped_lines"] == 1
    warnings = " | ".join(report["warnings"])
    assert "status is interrupted" in warnings
    assert "1 damaged lines in accounting/*.tsv" in warnings
    assert "12.json is unreadable" in warnings
    assert "pid 11" in warnings  # records without a summary
    assert "only 15 of the 20 requests have an accounting record" in warnings
    assert report["attribution_ms"]["cpu"] == 3.0
    assert_renders(report)


def test_errors_make_the_run_invalid(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    reqs = requests(50)
    reqs[0].status = 500
    write_requests(run, reqs)
    write_records(run, 11, reqs)
    report = build_report(run)
    assert report["valid"] is False and report["findings"][0]["title"] == "Errors above 1%"
    assert "NOT VALID" in assert_renders(report)


def test_saturated_load_generator_is_the_bottleneck(tmp_path: Path) -> None:
    run = full_run(tmp_path)
    run.manifest["cpu_window"]["locust_cpu_s"] = 9.5  # 95% of a core over 10 s
    run.save()
    report = build_report(run)
    assert report["valid"] is False and report["capacity"]["bottleneck"] == "load_generator"


def test_garbage_in_the_manifest_does_not_crash(tmp_path: Path) -> None:
    run = full_run(tmp_path)
    # The keys only the full report reads (the summary's own keys are the recorder's to keep sane).
    run.manifest.update(cpu_window="x", host=None, server=["asgi"], connections=5)
    run.manifest["instruments"]["accounting"] = {"enabled": "yes"}
    run.save()
    report = build_report(run)
    assert report["capacity"]["cpu_ms_per_request"] is None
    assert report["attribution_ms"] is not None  # the files are still there
    assert_renders(report)


def test_an_empty_run_directory(tmp_path: Path) -> None:
    report = build_report(Run.create(tmp_path, "empty"))
    for key in NEW_KEYS:
        assert key in report
    assert report["attribution_ms"] is None and report["findings"] == []
    assert_renders(report)


def test_the_bare_summary_still_renders(tmp_path: Path) -> None:
    """``record`` prints the summary alone at its end: the renderer must not need the new keys."""
    from rich.console import Console

    console = Console(record=True, width=WIDTH)
    with console.capture() as capture:
        console.print(report_table(summarize(full_run(tmp_path))))
    assert "Endpoints" in capture.get() and "Where the time went" not in capture.get()


def test_cli_report_json_has_the_new_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = full_run(tmp_path)
    assert main(["report", str(run.path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in NEW_KEYS:
        assert key in report
    assert main(["report", str(run.path)]) == 0
    assert "Where the time went" in capsys.readouterr().out
