"""asyncprof compare on a real sync and a real async run of the seed scenario."""

import json
from pathlib import Path

import pytest

from tests.integration.helpers import SHORT, asyncprof

pytestmark = pytest.mark.integration


def test_compare_explains_the_sync_async_gap(traces: Path, service_url: str) -> None:
    for mode in ("sync", "async"):
        proc = asyncprof("record", "--mode", mode, "--db", service_url, "--out", str(traces), "--no-pyinstrument",
                         *SHORT)
        assert proc.returncode == 0, proc.stderr[-2000:]
    runs = sorted(p.name for p in traces.iterdir())
    proc = asyncprof("compare", *runs, "--out", str(traces), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [r["run_id"] for r in result["runs"]] == runs
    gap = result["gap"]
    by_id = {r["run_id"]: r for r in result["runs"]}
    assert by_id[gap["from"]]["throughput_rps"] >= by_id[gap["to"]]["throughput_rps"]
    # The acceptance bar: named categories explain at least 80% of the per-request gap.
    assert gap["explained_share"] >= 0.8, gap
    assert abs(sum(gap["ms_per_request"].values()) - gap["latency_ms"]["difference"]) < 0.05
    text = asyncprof("compare", *runs, "--out", str(traces))
    assert text.returncode == 0 and "gap from" in text.stdout and "explained" in text.stdout


def test_compare_needs_two_runs(traces: Path) -> None:
    proc = asyncprof("compare", "nope", "--out", str(traces))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
