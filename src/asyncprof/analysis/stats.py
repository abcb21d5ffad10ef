"""Small, dependency-free statistics used by every report."""

import math
from collections.abc import Sequence

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0..100) of already sorted values, linear interpolation; NaN if empty."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    if n == 1:
        return float(sorted_values[0])
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


def latency_summary(values: Sequence[float]) -> dict[str, float | None]:
    """``mean``, ``p50``, ``p90``, ``p95``, ``p99`` and ``max`` of *values*; None for each if empty."""
    if not values:
        return {k: None for k in ("mean", *(f"p{p}" for p in PERCENTILES), "max")}
    ordered = sorted(values)
    out: dict[str, float | None] = {"mean": round(math.fsum(ordered) / len(ordered), 3)}
    for p in PERCENTILES:
        out[f"p{p}"] = round(percentile(ordered, p), 3)
    out["max"] = round(ordered[-1], 3)
    return out


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50)
