"""The synthetic run of ``scripts/bench-report`` is read by the real readers as a recorded run.

A tiny run (2,000 requests, 5,000 py-spy samples, 3 profiles) through ``build_report`` (what
``asyncprof report --json`` prints), the flame graph, the trace export and the completeness check:
if the generator drifted from a writer's format, the benchmark would time the wrong thing.
"""

import sys
from pathlib import Path

import orjson
import pytest

from asyncprof.analysis.report import build_report
from asyncprof.analysis.spans import SPAN_KIND_SERVER, iter_spans
from asyncprof.analysis.stacks import iter_stacks
from asyncprof.run import Run

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_report_data  # noqa: E402

REQUESTS, SAMPLES, PROFILES, WORKERS = 2000, 5000, 3, 4


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    path = bench_report_data.generate(tmp_path_factory.mktemp("bench") / "run", REQUESTS, SAMPLES, PROFILES,
                                      workers=WORKERS, seed=3)
    return Run.load(path)


@pytest.fixture(scope="module")
def report(run: Run) -> dict:
    return build_report(run)


def test_every_request_is_in_the_window_and_matched(report: dict) -> None:
    assert report["requests"] == REQUESTS
    assert report["status"] == "complete"
    assert report["workers"] == WORKERS
    otel = report["instruments"]["otel"]
    assert otel["match_rate"] == 1.0 and otel["complete"] is True
    assert otel["spans"] > 3 * REQUESTS  # a server span and its query spans per request
    assert report["accounting"]["match_rate"] == 1.0
    assert report["accounting"]["matched_requests"] == REQUESTS
    assert 0 < report["error_rate"] < 0.02
    assert {e["name"] for e in report["endpoints"]} == {e[0] for e in bench_report_data.ENDPOINTS}


def test_the_breakdown_and_findings_are_there(report: dict) -> None:
    att = report["attribution_ms"]
    assert att and att["event_loop"] > att["cpu"] > 0 and att["thread_hop"] > 0
    assert report["hops_per_request"] == pytest.approx(bench_report_data.HOPS)
    assert report["cpu_profile"] and report["cpu_profile"]["thread_pool"] > 0
    assert report["findings"]
    assert not [w for w in report["warnings"] if "damaged" in w or "cannot read" in w]


def test_pyspy_samples_are_counted_as_written(run: Run, report: dict) -> None:
    pyspy = report["instruments"]["pyspy"]
    assert pyspy["samples"] == SAMPLES
    assert set(pyspy["samples_by_pid"]) == {str(p) for p in run.manifest["pids"]["workers"]}
    stacks = list(iter_stacks(run.pyspy_dir / "samples.txt"))
    assert sum(s.count for s in stacks) == SAMPLES
    assert len({s.frames for s in stacks}) > 300  # many distinct stacks, as in a real recording
    assert 0 < pyspy["idle_samples"] < 0.05 * SAMPLES
    speedscope = orjson.loads((run.pyspy_dir / "speedscope.json").read_bytes())
    assert speedscope["profiles"]


def test_profiles_and_spans_belong_to_logged_requests(run: Run, report: dict) -> None:
    assert report["instruments"]["pyinstrument"]["profiles"] == PROFILES
    traces = {line.split(b"\t")[5].decode() for line in run.requests_path.read_bytes().splitlines()[1:]}
    profiles = {p.stem for p in run.profiles_dir.glob("*.pyisession")}
    assert profiles <= traces
    session = orjson.loads(next(run.profiles_dir.glob("*.pyisession")).read_bytes())
    assert session["frame_records"] and session["sample_count"] == len(session["frame_records"])
    servers = {span["traceId"] for _, span in iter_spans(run.spans_dir) if span["kind"] == SPAN_KIND_SERVER}
    assert traces <= servers


def test_flamegraph_and_export_read_it(run: Run, tmp_path: Path) -> None:
    from asyncprof.cli import main

    assert main(["flamegraph", str(run.path), "-o", str(tmp_path / "f.svg")]) == 0
    assert (tmp_path / "f.svg").stat().st_size > 10_000
    assert main(["export", "jaeger", str(run.path), "-o", str(tmp_path / "j.json")]) == 0
    jaeger = orjson.loads((tmp_path / "j.json").read_bytes())
    assert len(jaeger["data"]) >= REQUESTS
