"""The calibrate scenario end to end: a request of known cost, in both worker modes, and its bad-input errors."""

from pathlib import Path

import pytest

from tests.integration.helpers import SHORT, asyncprof, manifest, only_run, report_json

pytestmark = pytest.mark.integration

CALIBRATE = "cpu_ms=5,db_ms=10,block_ms=2,hops=2"
FLOOR_MS = 5 + 10 + 2  # cpu + pg_sleep + time.sleep: no request can be faster
CEILING_MS = 200.0  # 2 users on 2 workers: nothing queues, so far above the floor means something is wrong


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_calibrate_costs_what_it_says(mode: str, traces: Path) -> None:
    # SHORT first: the options after it (2 users, 4 s) take precedence.
    proc = asyncprof("record", *SHORT, "--mode", mode, "--scenario", "calibrate", "--calibrate", CALIBRATE,
                     "--users", "2", "--workers", "2", "--duration", "4", "--warmup", "1.5",
                     "--no-pyspy", "--no-pyinstrument", "--out", str(traces))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = only_run(traces)
    m = manifest(run)
    assert m["status"] == "complete"
    assert m["config"]["scenario"] == "calibrate"
    assert m["config"]["calibrate"] == {"cpu_ms": 5.0, "db_ms": 10.0, "block_ms": 2.0, "hops": 2}
    r = report_json(run)
    assert r["errors"] == 0
    assert r["requests"] > 20
    assert [e["name"] for e in r["endpoints"]] == [f"{mode}/calibrate"]
    p50 = r["latency_ms"]["p50"]
    assert FLOOR_MS <= p50 < CEILING_MS, r["latency_ms"]


def _one_clear_line(proc_stderr: str) -> str:
    lines = [ln for ln in proc_stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc_stderr
    assert len(lines) == 1, lines
    return lines[0]


def test_calibrate_with_another_scenario_is_a_usage_error(traces: Path) -> None:
    proc = asyncprof("record", "--scenario", "seed", "--calibrate", "cpu_ms=1", "--out", str(traces))
    assert proc.returncode == 2
    line = _one_clear_line(proc.stderr)
    assert "--calibrate only applies to --scenario calibrate" in line
    assert not list(traces.iterdir())  # nothing started, nothing written


def test_negative_calibrate_value_is_a_usage_error(traces: Path) -> None:
    proc = asyncprof("record", "--scenario", "calibrate", "--calibrate", "cpu_ms=-1", "--out", str(traces))
    assert proc.returncode == 2
    line = _one_clear_line(proc.stderr)
    assert "cpu_ms must be between 0 and 10,000 ms, not -1" in line
    assert not list(traces.iterdir())
