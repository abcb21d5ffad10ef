import math

from asyncprof.analysis.stats import latency_summary, percentile


def test_percentile_interpolates_like_numpy_linear() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert math.isclose(percentile(values, 90), 3.7)


def test_percentile_of_nothing_is_nan_and_of_one_is_it() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([7.0], 99) == 7.0


def test_latency_summary_of_1_to_100() -> None:
    s = latency_summary([float(v) for v in range(100, 0, -1)])  # unsorted input
    assert s["mean"] == 50.5
    assert s["p50"] == 50.5
    assert s["p99"] == 99.01
    assert s["max"] == 100.0


def test_latency_summary_empty_is_all_none() -> None:
    assert set(latency_summary([]).values()) == {None}
