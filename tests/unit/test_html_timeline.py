"""The time series and the latency CDF behind the HTML report's charts."""

from pathlib import Path

import pytest

from asyncprof.analysis.requests import read_request_log
from asyncprof.analysis.timeline import CDF_TAIL_SHARE, cdf_points, run_timeline, timeline
from tests.unit.synthetic import WINDOW, Req, make_run, trace, write_requests


def _log(tmp_path: Path, reqs: list[Req]):  # noqa: ANN202 - a RequestLog
    run = make_run(tmp_path)
    write_requests(run, reqs)
    return run, read_request_log(run.requests_path)


def test_bins_count_starts_and_take_p99_per_second(tmp_path: Path) -> None:
    # 10 requests in second 0 (latency 1..10 ms), 20 in second 1, one failure in second 2, one before the window.
    reqs = [Req(trace(i), latency_ms=float(i + 1), start=WINDOW[0] + i * 0.1) for i in range(10)]
    reqs += [Req(trace(100 + i), latency_ms=50.0, start=WINDOW[0] + 1 + i * 0.05) for i in range(20)]
    reqs += [Req(trace(200), latency_ms=7.0, start=WINDOW[0] + 2.5, status=500)]
    reqs += [Req(trace(300), latency_ms=1000.0, start=WINDOW[0] - 0.5)]
    _, log = _log(tmp_path, reqs)
    tl = timeline(log, WINDOW[0], WINDOW[1])
    assert tl.t_s == [float(i) for i in range(10)] and tl.end_s == 10.0
    assert tl.throughput_rps[:4] == [10.0, 20.0, 1.0, 0.0]
    assert tl.p99_ms[0] == pytest.approx(9.91) and tl.p99_ms[1] == 50.0 and tl.p99_ms[3] is None
    assert tl.errors[:3] == [0, 0, 1]
    assert tl.requests == 31 and tl.cdf[-1] == (50.0, 1.0)  # the request before the window is left out
    assert [tl.mid_s(i) for i in (0, 9)] == [0.5, 9.5]


def test_open_loop_counts_answers_received_in_each_bin(tmp_path: Path) -> None:
    # Started just before the window, answered 300 ms into it: counted (open loop counts answers).
    reqs = [Req(trace(1), latency_ms=500.0, start=WINDOW[0] - 0.2),
            Req(trace(2), latency_ms=1500.0, start=WINDOW[0] + 0.1),  # answered in second 1
            Req(trace(3), latency_ms=10.0, start=WINDOW[1] - 0.001)]  # answered after the window
    _, log = _log(tmp_path, reqs)
    tl = timeline(log, WINDOW[0], WINDOW[1], open_loop=True)
    assert tl.throughput_rps[:2] == [1.0, 1.0] and sum(tl.throughput_rps) == 2.0
    assert tl.requests == 2  # the window's latency describes the requests *started* in it


def test_a_short_last_stretch_joins_the_bin_before(tmp_path: Path) -> None:
    reqs = [Req(trace(i), latency_ms=5.0, start=WINDOW[0] + i * 0.1) for i in range(33)]  # 3.3 s of 10 req/s
    _, log = _log(tmp_path, reqs)
    tl = timeline(log, WINDOW[0], WINDOW[0] + 3.3)
    assert tl.t_s == [0.0, 1.0, 2.0] and tl.end_s == 3.3
    assert tl.throughput_rps == [10.0, 10.0, 10.0]  # the last bin is 1.3 s wide and holds 13 requests


def test_empty_window_and_missing_log(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    tl = run_timeline(run)  # no requests.tsv at all
    assert tl.t_s == [] and tl.cdf == [] and tl.requests == 0
    assert tl.to_json()["cdf"] == []
    with pytest.raises(ValueError):
        timeline(read_request_log(run.requests_path), 0.0, 1.0, bin_s=0)


def test_cdf_keeps_every_point_when_small_and_the_tail_when_large() -> None:
    assert cdf_points([3.0, 1.0, 2.0]) == [(1.0, 0.333333), (2.0, 0.666667), (3.0, 1.0)]
    values = [float(i) for i in range(100_000)]
    pts = cdf_points(values, max_points=500)
    assert 400 <= len(pts) <= 500
    assert pts[0] == (0.0, 0.00001) and pts[-1] == (99_999.0, 1.0)
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(pts, pts[1:], strict=False))
    tail = [p for p in pts if p[1] > 1 - CDF_TAIL_SHARE]
    assert len(tail) >= 240  # half the points describe the slowest 5%
    assert any(0.989 < q < 0.991 for _, q in pts) and any(0.998 < q < 1.0 for _, q in pts)
    with pytest.raises(ValueError):
        cdf_points(values, max_points=1)


def test_run_timeline_uses_the_manifest_window_and_loop(tmp_path: Path) -> None:
    run = make_run(tmp_path, config={"mode": "sync", "scenario": "seed", "workers": 2, "users": 10, "warmup": 1.0,
                                     "rate": 5.0})
    write_requests(run, [Req(trace(i), latency_ms=100.0, start=WINDOW[0] + i) for i in range(10)])
    tl = run_timeline(run)
    assert len(tl.t_s) == 10 and tl.requests == 10
    # Open loop: the request started at 9 s is answered at 9.1 s, inside the window; each second has one answer.
    assert tl.throughput_rps == [1.0] * 10
