"""The terminal view of ``asyncprof compare``: runs as columns, then the gap in words."""

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from asyncprof.analysis.attribution import ATTRIBUTION_CATEGORIES


def _num(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _rows(report: dict[str, Any]) -> dict[str, str]:
    lat = report.get("latency_ms") or {}
    cap = report.get("capacity") or {}
    attribution = report.get("attribution_ms") or {}
    profile = report.get("cpu_profile") or {}
    rows = {
        "mode / view": f"{report.get('mode')} / {report.get('view') or '–'}",
        "scenario": str(report.get("scenario")),
        "workers × users": f"{report.get('workers')} × {report.get('users')}",
        "status": f"{report.get('status')}{'' if report.get('valid') is not False else ' (not valid)'}",
        "req/s": _num(report.get("throughput_rps"), 0),
        "latency mean ms": _num(lat.get("mean")),
        "p50 ms": _num(lat.get("p50")),
        "p90 ms": _num(lat.get("p90")),
        "p99 ms": _num(lat.get("p99")),
        "error rate": "–" if report.get("error_rate") is None else f"{report['error_rate']:.2%}",
        "CPU ms / request": _num(cap.get("cpu_ms_per_request"), 2),
        "hops / request": _num(report.get("hops_per_request")),
    }
    for c in ATTRIBUTION_CATEGORIES:
        rows[f"{c} ms"] = _num(attribution.get(c)) if attribution else "–"
    for c, share in sorted(profile.items()):
        rows[f"CPU {c}"] = "–" if share is None else f"{share:.0%}"
    return rows


def compare_table(comparison: dict[str, Any]) -> Group:
    """Render ``compare_reports``' result: a table with one column per run, the gap, the verdict."""
    runs = comparison["runs"]
    per_run = [_rows(r) for r in runs]
    labels: list[str] = []
    for rows in per_run:
        labels += [k for k in rows if k not in labels]
    gap = comparison.get("gap")
    table = Table(title="Runs side by side", title_justify="left")
    table.add_column("")
    for r in runs:
        table.add_column(str(r.get("run_id")), justify="right")
    if gap:
        table.add_column("gap (worst − best)", justify="right")
    for label in labels:
        cells = [rows.get(label, "–") for rows in per_run]
        if gap:
            category = label[:-3] if label.endswith(" ms") else None
            delta = gap["ms_per_request"].get(category) if category else None
            cells.append("" if delta is None else f"{delta:+.1f}")
        table.add_row(label, *cells)
    parts: list[Any] = [table]
    if gap:
        share = gap.get("explained_share")
        parts.append(Text(f"gap from {gap['from']} to {gap['to']}: "
                          f"{gap['latency_ms']['difference']:+.1f} ms per request, "
                          f"{'–' if share is None else f'{share:.0%}'} explained by named categories"))
        parts.append(Text(gap["verdict"]))
    else:
        parts.append(Text("no gap: compare needs two runs with a per-request breakdown", style="yellow"))
    for r in runs:
        if r.get("valid") is False:
            reasons = "; ".join(r.get("invalid_reasons") or []) or "see its findings"
            parts.append(Text(f"NOT VALID for conclusions: {r.get('run_id')}: {reasons}", style="bold red"))
    for r in runs:
        for w in r.get("warnings", []):
            parts.append(Text(f"warning ({r.get('run_id')}): {w}", style="yellow"))
    return Group(*parts)
