"""A run's measured window over time, and its latency distribution: what the HTML report plots.

:func:`timeline` is a pure function of the client request log and the measured window; it
gives, per bin of ``bin_s`` seconds from the window's start,

* ``throughput_rps``: closed loop, the requests that *started* in the bin per second (as the
  summary's ``throughput_rps`` counts them); open loop, the answers *received* in the bin per
  second (starts follow the schedule whatever the server does, so they would show the offered
  rate, not the server's);
* ``p99_ms``: the 99th percentile latency of the requests that started in the bin (None for a
  bin without requests); ``errors``: how many of them failed;

and the latency CDF of the window's requests as ``(latency_ms, fraction ≤ latency)`` points,
at most ``max_points`` of them (see :func:`cdf_points`).  Each bin's count is divided by its
own width; the last bin runs to the window's end, between half and one and a half ``bin_s``
long (the whole window when it is shorter).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asyncprof.analysis.requests import RequestLog, read_request_log
from asyncprof.analysis.stats import percentile
from asyncprof.analysis.summary import measured_window
from asyncprof.run import Run

#: Default bin width (s) of the time series and the most points a CDF keeps.
BIN_S = 1.0
MAX_CDF_POINTS = 500
#: Half of a downsampled CDF's points are spread over the slowest requests, this share of them,
#: so the tail (p99, p99.9) keeps its shape.
CDF_TAIL_SHARE = 0.05


@dataclass(frozen=True)
class Timeline:
    """Per-bin series over the measured window and the window's latency CDF.

    ``t_s[i]`` is bin *i*'s start in seconds after the window's start, ``end_s`` the window's
    length (the last bin's end); every per-bin list has the same length.  ``cdf`` is sorted by
    latency, fractions rise to 1.0.
    """

    bin_s: float
    t_s: list[float]
    end_s: float
    throughput_rps: list[float]
    p99_ms: list[float | None]
    errors: list[int]
    cdf: list[tuple[float, float]]
    requests: int

    def mid_s(self, i: int) -> float:
        """The middle of bin *i*, in seconds after the window's start."""
        end = self.t_s[i + 1] if i + 1 < len(self.t_s) else self.end_s
        return round((self.t_s[i] + end) / 2, 3)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with the fields above (CDF points as ``[ms, fraction]`` pairs)."""
        return {"bin_s": self.bin_s, "t_s": self.t_s, "end_s": self.end_s, "throughput_rps": self.throughput_rps,
                "p99_ms": self.p99_ms, "errors": self.errors, "requests": self.requests,
                "cdf": [[ms, q] for ms, q in self.cdf]}


def cdf_points(latencies_ms: Sequence[float], max_points: int = MAX_CDF_POINTS) -> list[tuple[float, float]]:
    """The empirical CDF of *latencies_ms* as ``(latency, share of requests at most that slow)``.

    With at most *max_points* values every request is a point; otherwise half the points are
    evenly spaced by rank over all requests and half over the slowest :data:`CDF_TAIL_SHARE`,
    always keeping the fastest and the slowest.  Rounded to 3 decimals (µs, and 0.1 % steps
    of the share).
    """
    if max_points < 2:
        raise ValueError("a CDF needs at least 2 points")
    ordered = sorted(latencies_ms)
    n = len(ordered)
    if n == 0:
        return []
    if n <= max_points:
        ranks = list(range(n))
    else:
        half = max_points // 2
        body = {round(k * (n - 1) / (half - 1)) for k in range(half)}
        first_tail = min(n - 1, int(n * (1 - CDF_TAIL_SHARE)))
        span = n - 1 - first_tail
        tail_count = max_points - half
        tail = {first_tail + round(k * span / max(tail_count - 1, 1)) for k in range(tail_count)}
        ranks = sorted(body | tail)
        while len(ranks) > max_points:  # rounding collisions only shrink the set; this never runs long
            ranks.pop(len(ranks) // 2)
    return [(round(ordered[i], 3), round((i + 1) / n, 6)) for i in ranks]


def timeline(log: RequestLog, begin: float | None, end: float | None, *, open_loop: bool = False,
             bin_s: float = BIN_S, max_cdf_points: int = MAX_CDF_POINTS) -> Timeline:
    """The series of the window ``[begin, end)`` of *log* (the run's whole log: open-loop answers
    received in the window may come from requests started before it).

    A window without a known end ends at the last start in it; without a known beginning, at the
    first start.  An empty window gives empty series and an empty CDF.
    """
    if bin_s <= 0:
        raise ValueError("bin_s must be positive")
    window = log.window(begin, end)
    if begin is None and window.start:
        begin = min(window.start)
    if end is None and window.start:
        end = max(window.start)
    if begin is None or end is None or end <= begin or not len(window):
        return Timeline(bin_s, [], 0.0, [], [], [], cdf_points(window.latency_ms, max_cdf_points), len(window))
    bins = max(1, round((end - begin) / bin_s))  # a last stretch under half a bin joins the bin before
    latencies: list[list[float]] = [[] for _ in range(bins)]
    errors = [0] * bins
    for i, start in enumerate(window.start):
        b = min(int((start - begin) / bin_s), bins - 1)
        latencies[b].append(window.latency_ms[i])
        errors[b] += window.is_error(i)
    counts = [len(v) for v in latencies]
    if open_loop:
        counts = [0] * bins
        for start, latency in zip(log.start, log.latency_ms, strict=True):
            done = start + latency / 1000
            if begin <= done < end:
                counts[min(int((done - begin) / bin_s), bins - 1)] += 1
    widths = [bin_s] * (bins - 1) + [end - begin - (bins - 1) * bin_s]
    return Timeline(
        bin_s=bin_s,
        t_s=[round(b * bin_s, 3) for b in range(bins)],
        end_s=round(end - begin, 3),
        throughput_rps=[round(c / w, 2) if w > 0 else 0.0 for c, w in zip(counts, widths, strict=True)],
        p99_ms=[round(percentile(sorted(v), 99), 3) if v else None for v in latencies],
        errors=errors,
        cdf=cdf_points(window.latency_ms, max_cdf_points),
        requests=len(window),
    )


def run_timeline(run: Run, *, bin_s: float = BIN_S, max_cdf_points: int = MAX_CDF_POINTS) -> Timeline:
    """:func:`timeline` of *run*'s ``requests.tsv`` over its measured window (as the summary cuts it)."""
    log = read_request_log(run.requests_path)
    begin, end = measured_window(run, log)
    open_loop = run.manifest.get("config", {}).get("rate") is not None
    return timeline(log, begin, end, open_loop=open_loop, bin_s=bin_s, max_cdf_points=max_cdf_points)
