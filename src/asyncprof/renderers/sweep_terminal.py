"""The terminal view of ``asyncprof sweep``: one row per (mode, users) point, then the verdicts."""

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def _interval(v: dict[str, float], digits: int) -> str:
    return f"{v['median']:.{digits}f} [{v['ci_low']:.{digits}f}–{v['ci_high']:.{digits}f}]"


def sweep_table(summary: dict[str, Any]) -> Group:
    """Render ``summarize_sweep``'s result."""
    table = Table(title="Throughput and p99 against users (median [95% interval] over trials)", title_justify="left")
    for col in ("mode", "users", "trials", "req/s", "p99 ms", "valid"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for p in summary["points"]:
        table.add_row(p["mode"], str(p["users"]), str(p["trials"]), _interval(p["throughput_rps"], 0),
                      _interval(p["p99_ms"], 1), "yes" if p["valid"] else "no")
    slo = summary["slo_p99_ms"]
    lines = [
        Text(f"{mode}: sustains {users if users is not None else 'no level of'} users within p99 ≤ {slo:g} ms; "
             f"knee at {summary['knee'].get(mode) or '–'} users")
        for mode, users in summary["max_users_within_slo"].items()
    ]
    return Group(table, *lines)
