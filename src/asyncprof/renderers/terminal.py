"""The human report: rich tables rendered to text (colour when the terminal supports it)."""

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from asyncprof.renderers import register_report_renderer


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def report_table(report: dict[str, Any]) -> Group:
    """The summary as rich renderables (shared by the report command and the end of record)."""
    head = Text.assemble(
        (f"{report['run_id']}", "bold"),
        f"  mode={report['mode']} scenario={report['scenario']} view={report.get('view')} ",
        f"workers={report.get('workers')} users={report.get('users')} status=",
        (str(report["status"]), "green" if report["status"] == "complete" else "yellow"),
    )
    lat = report["latency_ms"]
    totals = Text(
        f"{report['requests']} requests in {report['window_s'] or 0:.1f} s measured window: "
        f"{report['throughput_rps'] or 0:.1f} req/s, {report['errors']} errors; "
        f"latency ms mean {_ms(lat['mean'])} p50 {_ms(lat['p50'])} p90 {_ms(lat['p90'])} "
        f"p99 {_ms(lat['p99'])} max {_ms(lat['max'])}"
    )
    table = Table(title="Endpoints", title_justify="left")
    for col in ("endpoint", "requests", "errors", "mean", "p50", "p90", "p95", "p99", "max"):
        table.add_column(col, justify="left" if col == "endpoint" else "right")
    for ep in report["endpoints"]:
        el = ep["latency_ms"]
        table.add_row(ep["name"], str(ep["requests"]), str(ep["errors"]),
                      *(_ms(el[k]) for k in ("mean", "p50", "p90", "p95", "p99", "max")))
    inst = report["instruments"]
    instruments = Text(
        f"py-spy: {inst['pyspy']['samples']} samples ({inst['pyspy']['idle_samples']} idle) "
        f"from {len(inst['pyspy']['samples_by_pid'])} processes · "
        f"OTel: {inst['otel']['spans']} spans, {inst['otel']['matched_requests']} requests matched · "
        f"pyinstrument: {inst['pyinstrument']['profiles']} profiles"
    )
    parts: list[Any] = [head, totals, table, instruments]
    parts += [Text(f"warning: {w}", style="yellow") for w in report.get("warnings", [])]
    return Group(*parts)


@register_report_renderer("terminal")
def render_terminal(report: dict[str, Any]) -> str:
    console = Console(record=True, width=110)
    with console.capture() as capture:
        console.print(report_table(report))
    return capture.get()
