"""The terminal view of ``asyncprof sweep``: one row per (mode, load level) point, then the verdicts."""

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def _interval(v: dict[str, float], digits: int) -> str:
    return f"{v['median']:.{digits}f} [{v['ci_low']:.{digits}f}–{v['ci_high']:.{digits}f}]"


def sweep_table(summary: dict[str, Any]) -> Group:
    """Render ``summarize_sweep``'s result."""
    axis = summary.get("axis", "users")
    unit = "users" if axis == "users" else "req/s offered"
    title = "Throughput and p99 against " + ("users (closed loop)" if axis == "users" else "arrival rate (open loop)")
    table = Table(title=f"{title}, median [95% interval] over trials", title_justify="left")
    for col in ("mode", axis if axis == "users" else "rate", "trials", "req/s", "p99 ms", "valid"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for p in summary["points"]:
        table.add_row(p["mode"], f"{p[axis]:g}", str(p["trials"]), _interval(p["throughput_rps"], 0),
                      _interval(p["p99_ms"], 1), "yes" if p["valid"] else "no (see the runs' findings)")
    slo = summary["slo_p99_ms"]
    lines = [
        Text(f"{mode}: sustains {f'{level:g}' if level is not None else 'no level of'} {unit} within p99 ≤ {slo:g} ms"
             f"; knee at {_level(summary['knee'].get(mode))} {unit}")
        for mode, level in summary[f"max_{axis}_within_slo"].items()
    ]
    if not all(p["valid"] for p in summary["points"]):
        lines.append(Text("points marked invalid had a saturated load generator or errors above 1%: "
                          "they say nothing about the server", style="yellow"))
    return Group(table, *lines)


def _level(value: float | None) -> str:
    return f"{value:g}" if value is not None else "–"
