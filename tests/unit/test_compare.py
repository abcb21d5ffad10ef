"""compare_reports: the gap between the best and the worst run, in named categories."""

from typing import Any

import pytest

from asyncprof.analysis.attribution import ATTRIBUTION_CATEGORIES
from asyncprof.analysis.compare import compare_reports


def report(run_id: str, rps: float, cpu_ms: float, valid: bool = True, **ms: float) -> dict[str, Any]:
    attribution = {c: 0.0 for c in ATTRIBUTION_CATEGORIES} | ms
    return {"run_id": run_id, "mode": run_id, "workers": 4, "users": 50, "throughput_rps": rps, "valid": valid,
            "attribution_ms": attribution, "capacity": {"cpu_ms_per_request": cpu_ms}, "hops_per_request": 0,
            "cpu_profile": {"app": 0.5, "thread_pool": 0.1}}


def test_gap_runs_from_fastest_to_slowest_and_sums_up() -> None:
    fast = report("sync", 1000, 1.0, cpu=1.0, server_queue=40.0)
    slow = report("async", 400, 4.0, cpu=2.0, event_loop=70.0, thread_hop=10.0, server_queue=4.0, other=3.0)
    result = compare_reports([slow, fast])
    assert [r["run_id"] for r in result["runs"]] == ["async", "sync"]  # the order given is kept
    gap = result["gap"]
    assert (gap["from"], gap["to"]) == ("sync", "async")
    assert gap["latency_ms"]["difference"] == pytest.approx(89.0 - 41.0)
    assert sum(gap["ms_per_request"].values()) == pytest.approx(gap["latency_ms"]["difference"])
    assert gap["ms_per_request"]["event_loop"] == 70.0 and gap["ms_per_request"]["server_queue"] == -36.0
    assert gap["explained_share"] == pytest.approx(1 - 3.0 / 48.0, abs=1e-4)
    assert gap["cpu_ms_per_request"]["ratio"] == 4.0
    assert "event_loop +70.0 ms" in gap["verdict"] and "offset by server_queue -36.0 ms" in gap["verdict"]


def test_invalid_runs_rank_last_and_missing_breakdowns_give_no_gap() -> None:
    good = report("a", 500, 1.0, cpu=1.0)
    invalid_fast = report("b", 900, 1.0, valid=False, cpu=2.0)
    assert compare_reports([invalid_fast, good])["gap"]["from"] == "a"
    no_breakdown = report("c", 100, 1.0) | {"attribution_ms": None}
    assert compare_reports([good, no_breakdown])["gap"] is None
    assert compare_reports([good])["gap"] is None


def test_the_table_says_which_runs_are_not_valid() -> None:
    from rich.console import Console

    from asyncprof.renderers.compare_terminal import compare_table

    bad = report("b", 900, 1.0, valid=False, cpu=2.0) | {
        "invalid_reasons": ["the load generator used 97% of a core"], "latency_ms": {}, "warnings": []}
    good = report("a", 500, 1.0, cpu=3.0) | {"latency_ms": {}, "warnings": []}
    console = Console(width=200, record=True)
    console.print(compare_table(compare_reports([good, bad])))
    text = console.export_text()
    assert "NOT VALID for conclusions: b: the load generator used 97% of a core" in text
    assert "NOT VALID for conclusions: a" not in text
