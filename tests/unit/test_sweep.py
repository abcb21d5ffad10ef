"""Sweep curves: medians with intervals, the max users within the SLO, the knee, the interleaved plan."""

from asyncprof.analysis.sweep import Trial, median_interval, summarize_sweep
from asyncprof.sweeper import plan


def test_plan_interleaves_modes_at_every_point() -> None:
    assert plan(["sync", "async"], [10, 50], 2)[:4] == [(0, 10, "sync"), (0, 10, "async"), (0, 50, "sync"),
                                                       (0, 50, "async")]
    assert len(plan(["a", "b", "c"], [1, 2], 3)) == 18


def test_median_interval_brackets_the_median_and_is_reproducible() -> None:
    values = [100.0, 110.0, 90.0, 105.0, 95.0]
    a, b = median_interval(values), median_interval(values)
    assert a == b and a["median"] == 100.0
    assert 90.0 <= a["ci_low"] <= 100.0 <= a["ci_high"] <= 110.0
    assert median_interval([7.0]) == {"median": 7.0, "ci_low": 7.0, "ci_high": 7.0}


def _trials(mode: str, curve: dict[int, tuple[float, float]], valid: bool = True) -> list[Trial]:
    return [Trial(mode, u, f"{mode}-{u}-{i}", rps * (1 + 0.01 * i), p99, valid)
            for u, (rps, p99) in curve.items() for i in range(3)]


def test_slo_and_knee() -> None:
    trials = _trials("sync", {10: (500, 20), 50: (1000, 60), 100: (1050, 150), 200: (1060, 320)})
    trials += _trials("async", {10: (300, 40), 50: (500, 250), 100: (520, 500), 200: (530, 900)})
    s = summarize_sweep(trials, slo_p99_ms=200)
    assert s["max_users_within_slo"] == {"async": 10, "sync": 100}
    assert s["knee"] == {"async": 50, "sync": 50}
    point = next(p for p in s["points"] if p["mode"] == "sync" and p["users"] == 50)
    assert point["trials"] == 3 and point["throughput_rps"]["ci_low"] <= 1010 <= point["throughput_rps"]["ci_high"]


def test_invalid_points_do_not_count_as_sustained() -> None:
    s = summarize_sweep(_trials("async", {10: (300, 40)}, valid=False), slo_p99_ms=200)
    assert s["max_users_within_slo"] == {"async": None} and s["points"][0]["valid"] is False


def test_open_loop_sweep_uses_the_rate_axis() -> None:
    trials = [Trial("sync", 100, f"s{r}-{i}", min(r, 900.0) * (1 - 0.01 * i), p99, True, rate=r)
              for r, p99 in ((200.0, 10.0), (400.0, 15.0), (800.0, 80.0), (1600.0, 4000.0)) for i in range(3)]
    s = summarize_sweep(trials, slo_p99_ms=100)
    assert s["axis"] == "rate"
    assert [p["rate"] for p in s["points"]] == [200.0, 400.0, 800.0, 1600.0]
    assert all("users" not in p for p in s["points"])
    assert s["max_rate_within_slo"] == {"sync": 800.0}
    assert s["knee"] == {"sync": 1600.0}  # 800 reaches 792/900 = 88%, below the knee share


def test_a_sweep_is_not_both_closed_and_open_loop() -> None:
    import pytest

    with pytest.raises(ValueError, match="closed loop"):
        summarize_sweep([Trial("sync", 10, "a", 1.0, 1.0, True), Trial("sync", 10, "b", 1.0, 1.0, True, rate=5.0)],
                        slo_p99_ms=100)
