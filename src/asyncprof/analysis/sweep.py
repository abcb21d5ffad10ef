"""Throughput and p99 against load, per mode, from repeated trials: the curves of ``asyncprof sweep``.

:func:`summarize_sweep` is a pure function of per-trial figures.  Its result is the JSON
contract of ``asyncprof sweep --json``::

    {"axis": "users" | "rate",
     "points": [{"mode", "users" (or "rate"), "trials", "throughput_rps": {"median", "ci_low", "ci_high"},
                 "p99_ms": {"median", "ci_low", "ci_high"}, "valid", "run_ids"}],
     "max_users_within_slo": {mode: users | null}, "knee": {mode: users | null},
     "slo_p99_ms": float}

On the ``rate`` axis (open-loop sweeps) the levels are arrival rates in requests per second and
the two verdicts are named ``max_rate_within_slo`` and ``knee`` (a rate).

Intervals are 95% bootstrap percentile intervals of the median over the trials (fixed seed,
so the same trials give the same interval); with one trial the interval is that trial.
"""

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95
#: The knee is the lowest load whose throughput reaches this share of the mode's best throughput:
#: past it, more users mostly add latency.
KNEE_SHARE = 0.9


@dataclass(frozen=True)
class Trial:
    """One recorded trial of one sweep point."""

    mode: str
    users: int
    run_id: str
    throughput_rps: float
    p99_ms: float
    valid: bool
    rate: float | None = None  # open loop: the arrival rate asked for (the sweep's axis then)

    @property
    def level(self) -> float:
        """The point's position on the sweep's axis: the rate in open loop, else the users."""
        return self.rate if self.rate is not None else self.users


def median_interval(values: Sequence[float], seed: int = 0) -> dict[str, float]:
    """Median of *values* with a bootstrap percentile interval at :data:`CONFIDENCE`."""
    if not values:
        raise ValueError("no values")
    med = statistics.median(values)
    if len(values) == 1:
        return {"median": med, "ci_low": med, "ci_high": med}
    rng = random.Random(seed)
    boot = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(BOOTSTRAP_SAMPLES))
    tail = (1 - CONFIDENCE) / 2
    low = boot[int(tail * (len(boot) - 1))]
    high = boot[int((1 - tail) * (len(boot) - 1))]
    return {"median": round(med, 3), "ci_low": round(low, 3), "ci_high": round(high, 3)}


def summarize_sweep(trials: Sequence[Trial], slo_p99_ms: float) -> dict[str, Any]:
    """Points (mode × load level) with medians and intervals, the most load within the SLO, the knee.

    The axis is ``rate`` when every trial has a rate, else ``users``; mixing them is a ValueError.
    """
    rates = {t.rate is not None for t in trials}
    if len(rates) > 1:
        raise ValueError("a sweep is either closed loop (users) or open loop (rate), not both")
    axis = "rate" if rates == {True} else "users"
    keys = sorted({(t.mode, t.level) for t in trials}, key=lambda k: (k[0], k[1]))
    points: list[dict[str, Any]] = []
    for mode, level in keys:
        group = [t for t in trials if t.mode == mode and t.level == level]
        points.append({
            "mode": mode,
            axis: level,
            "trials": len(group),
            "throughput_rps": median_interval([t.throughput_rps for t in group]),
            "p99_ms": median_interval([t.p99_ms for t in group]),
            "valid": all(t.valid for t in group),
            "run_ids": [t.run_id for t in group],
        })
    modes = sorted({p["mode"] for p in points})
    within: dict[str, float | None] = {}
    knee: dict[str, float | None] = {}
    for mode in modes:
        curve = [p for p in points if p["mode"] == mode]
        ok = [p[axis] for p in curve if p["p99_ms"]["median"] <= slo_p99_ms and p["valid"]]
        within[mode] = max(ok) if ok else None
        best = max(p["throughput_rps"]["median"] for p in curve)
        reaching = [p[axis] for p in curve if p["throughput_rps"]["median"] >= KNEE_SHARE * best]
        knee[mode] = min(reaching) if reaching and best > 0 else None
    return {"axis": axis, "points": points, f"max_{axis}_within_slo": within, "knee": knee, "slo_p99_ms": slo_p99_ms}
