"""Runs side by side, and the gap between the best and the worst one in named categories.

:func:`compare_reports` is a pure function of reports made by
:func:`asyncprof.analysis.report.build_report`.  Its result is the JSON contract of
``asyncprof compare --json``::

    {"runs": [<report>, ...],
     "gap": {"from": run_id, "to": run_id, "latency_ms": {"from", "to", "difference"},
             "ms_per_request": {category: ms}, "explained_share": float,
             "cpu_ms_per_request": {"from", "to", "ratio"}, "cpu_profile_share_points": {category: points},
             "verdict": str} | null}

The gap runs from the best run (highest throughput; runs valid for conclusions first) to the
worst.  Because every request's categories sum to its client latency, the differences of the
mean categories sum to the difference of the mean latencies of the matched requests; the part
carried by ``other`` is what the hooks did not explain, so ``explained_share`` is
``1 - |Δother| / |Δlatency|`` (clamped to [0, 1]).
"""

from typing import Any

from asyncprof.analysis.attribution import ATTRIBUTION_CATEGORIES

#: Categories whose difference is below this share of the gap are left out of the verdict's words.
VERDICT_MIN_SHARE = 0.05


def _rank_key(report: dict[str, Any]) -> tuple[bool, float]:
    return (report.get("valid") is not False, float(report.get("throughput_rps") or 0.0))


def _describe(report: dict[str, Any]) -> str:
    load = report.get("load") or {}
    offered = f"{load.get('offered_rps'):g} req/s offered" if load.get("model") == "open" else f"{report.get('users')} users"
    return f"{report.get('run_id')} ({report.get('mode')}, {report.get('workers')} workers, {offered})"


def gap_between(best: dict[str, Any], worst: dict[str, Any]) -> dict[str, Any] | None:
    """The per-request gap from *best* to *worst* in named categories; None without both breakdowns."""
    a, b = best.get("attribution_ms"), worst.get("attribution_ms")
    if not a or not b:
        return None
    deltas = {c: round(float(b.get(c) or 0.0) - float(a.get(c) or 0.0), 3) for c in ATTRIBUTION_CATEGORIES}
    lat_from = sum(float(a.get(c) or 0.0) for c in ATTRIBUTION_CATEGORIES)
    lat_to = sum(float(b.get(c) or 0.0) for c in ATTRIBUTION_CATEGORIES)
    difference = lat_to - lat_from
    explained = max(0.0, min(1.0, 1.0 - abs(deltas["other"]) / abs(difference))) if difference else None
    cap_a, cap_b = best.get("capacity") or {}, worst.get("capacity") or {}
    cpu_a, cpu_b = cap_a.get("cpu_ms_per_request"), cap_b.get("cpu_ms_per_request")
    prof_a, prof_b = best.get("cpu_profile") or {}, worst.get("cpu_profile") or {}
    profile_points = (
        {c: round(100 * (float(prof_b.get(c) or 0.0) - float(prof_a.get(c) or 0.0)), 1) for c in {*prof_a, *prof_b}}
        if prof_a and prof_b else None
    )
    gap = {
        "from": best.get("run_id"),
        "to": worst.get("run_id"),
        "latency_ms": {"from": round(lat_from, 3), "to": round(lat_to, 3), "difference": round(difference, 3)},
        "ms_per_request": deltas,
        "explained_share": round(explained, 4) if explained is not None else None,
        "cpu_ms_per_request": {
            "from": cpu_a, "to": cpu_b,
            "ratio": round(cpu_b / cpu_a, 2) if cpu_a and cpu_b else None,
        },
        "cpu_profile_share_points": profile_points,
    }
    gap["verdict"] = _verdict(best, worst, gap)
    return gap


def _verdict(best: dict[str, Any], worst: dict[str, Any], gap: dict[str, Any]) -> str:
    lat = gap["latency_ms"]
    difference = lat["difference"]
    parts = [
        f"{_describe(worst)} serves {worst.get('throughput_rps') or 0:.0f} req/s against "
        f"{best.get('throughput_rps') or 0:.0f} for {_describe(best)}; its requests take "
        f"{lat['to']:.1f} ms on average against {lat['from']:.1f} ms ({difference:+.1f} ms)."
    ]
    if difference:
        named = [(c, d) for c, d in gap["ms_per_request"].items() if c != "other"]
        more = sorted(((c, d) for c, d in named if d > 0 and abs(d) >= VERDICT_MIN_SHARE * abs(difference)),
                      key=lambda cd: -cd[1])
        less = sorted(((c, d) for c, d in named if d < 0 and abs(d) >= VERDICT_MIN_SHARE * abs(difference)),
                      key=lambda cd: cd[1])
        if more:
            parts.append("The difference is " + ", ".join(f"{c} {d:+.1f} ms" for c, d in more)
                         + (f", offset by {', '.join(f'{c} {d:+.1f} ms' for c, d in less)}" if less else "") + ".")
        share = gap["explained_share"]
        if share is not None:
            parts.append(f"Named categories explain {share:.0%} of the gap; {gap['ms_per_request']['other']:+.1f} ms "
                         "per request is left in other.")
    cpu = gap["cpu_ms_per_request"]
    if cpu.get("ratio"):
        parts.append(f"Each request costs the workers {cpu['to']:.2f} ms of CPU against {cpu['from']:.2f} ms "
                     f"({cpu['ratio']:.1f}×).")
    hops = worst.get("hops_per_request")
    if hops:
        parts.append(f"The slower run crosses sync<->async {hops:.1f} times per request.")
    return " ".join(parts)


def compare_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Reports in the given order, plus the gap from the best to the worst (None for fewer than two)."""
    if len(reports) < 2:
        return {"runs": reports, "gap": None}
    ranked = sorted(reports, key=_rank_key, reverse=True)
    return {"runs": reports, "gap": gap_between(ranked[0], ranked[-1])}
