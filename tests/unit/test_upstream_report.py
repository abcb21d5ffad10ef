"""upstream_wait in the analysis: its column is a category, it adds up, the report shows it, old files read as 0."""

from pathlib import Path

import pytest

from asyncprof.analysis.attribution import ATTRIBUTION_CATEGORIES, request_breakdown
from asyncprof.analysis.report import build_report
from asyncprof.renderers import render_report
from asyncprof.renderers.terminal import WIDTH
from asyncprof.worker.record_format import ACCOUNTING_DIR, COLUMNS, SERVER_CATEGORIES
from tests.unit.synthetic import Req, make_run, trace, write_records, write_requests


def fanout_requests(n: int = 20) -> list[Req]:
    return [Req(trace(i), latency_ms=25.0, name="/async/fanout/", start=1001.0 + i * 0.1,
                us={"wall_us": 24_000, "cpu_us": 3_000, "upstream_wait_us": 20_000, "event_loop_us": 500,
                    "upstream_calls": 3})
            for i in range(1, n + 1)]


def test_upstream_wait_is_a_server_category_with_its_column() -> None:
    assert "upstream_wait" in SERVER_CATEGORIES and "upstream_wait" in ATTRIBUTION_CATEGORIES
    assert "upstream_wait_us" in COLUMNS and "upstream_calls" in COLUMNS
    record = {f"{c}_us": 0 for c in SERVER_CATEGORIES} | {"wall_us": 24_000, "cpu_us": 3_000,
                                                           "upstream_wait_us": 20_000}
    b = request_breakdown(25.0, record)
    assert b["upstream_wait"] == 20.0 and b["other"] == pytest.approx(1.0) and b["server_queue"] == pytest.approx(1.0)
    assert sum(b.values()) == pytest.approx(25.0)


def test_report_shows_the_upstream_wait_and_calls(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    reqs = fanout_requests()
    write_requests(run, reqs)
    write_records(run, 11, reqs)
    report = build_report(run)
    att = report["attribution_ms"]
    assert att["upstream_wait"] == 20.0 and att["other"] == 0.5
    assert sum(att.values()) == pytest.approx(report["latency_ms"]["mean"], abs=1e-2)
    assert report["upstream_calls_per_request"] == 3.0
    assert report["endpoints"][0]["upstream_calls_per_request"] == 3.0
    text = render_report("terminal", report)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    assert "http=upstream_wait" in text and "3.0 upstream HTTP calls" in text


def test_a_record_file_from_before_the_column_counts_it_as_zero(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    reqs = fanout_requests(5)
    write_requests(run, reqs)
    old = [c for c in COLUMNS if c not in ("upstream_wait_us", "upstream_calls")]
    lines = ["\t".join(old)] + ["\t".join(line.split("\t")[: len(old)]) for line in map(Req.record_line, reqs)]
    (run.path / ACCOUNTING_DIR / "11.tsv").write_text("\n".join(lines) + "\n")
    report = build_report(run)
    assert report["attribution_ms"]["upstream_wait"] == 0.0
    assert report["attribution_ms"]["other"] == 20.5  # the wait the old file could not say
    assert report["upstream_calls_per_request"] == 0.0
    assert any("upstream_wait_us" in w for w in report["warnings"])
