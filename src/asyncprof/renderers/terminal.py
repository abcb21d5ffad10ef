"""The human report: rich tables rendered to text (colour when the terminal supports it).

:func:`report_table` takes either a bare summary (``analysis.summary.summarize``, what ``record``
prints at its end) or the full report (``analysis.report.build_report``); sections whose keys
are absent or null are left out, and the warnings say why.  Everything fits 100 columns.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from asyncprof.analysis.completeness import describe_unmatched
from asyncprof.renderers import register_report_renderer

WIDTH = 100
BAR_WIDTH = 60
# (category, column header, bar letter, style): the letter keeps bars readable without colour.
CATEGORY_STYLE: tuple[tuple[str, str, str, str], ...] = (
    ("cpu", "cpu", "c", "black on red"),
    ("db_wait", "db", "d", "black on blue"),
    ("db_connect", "conn", "n", "black on cyan"),
    ("upstream_wait", "http", "u", "black on green"),
    ("event_loop", "loop", "l", "black on magenta"),
    ("thread_hop", "hop", "h", "black on yellow"),
    ("gil_wait", "gil", "g", "black on bright_red"),
    ("os_run_queue", "runq", "r", "black on dark_orange"),
    ("blocking", "block", "b", "black on bright_magenta"),
    ("server_queue", "queue", "q", "black on grey50"),
    ("other", "other", "o", "black on white"),
)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def _app_words(app: dict[str, Any]) -> str:
    """A project run's header: the directory and what it served."""
    return f"{app.get('dir')} ({app.get('settings')}, {app.get('served')})"


def report_table(report: dict[str, Any]) -> Group:
    """The report as rich renderables (shared by the report command and the end of record)."""
    head = Text.assemble(
        (f"{report['run_id']}", "bold"),
        f"  mode={report['mode']} " + (f"app={_app_words(report['app'])} " if report.get("app") else
                                        f"scenario={report['scenario']} view={report.get('view')} "),
        f"workers={report.get('workers')} {_load_words(report.get('load') or {}, report.get('users'))} status=",
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
    parts: list[Any] = [head, totals]
    if errors := errors_line(report):
        parts.append(errors)
    if load := load_line(report.get("load") or {}):
        parts.append(load)
    if report.get("valid") is False:
        reasons = "; ".join(report.get("invalid_reasons", []))
        parts.append(Text(f"NOT VALID for conclusions: {reasons}", style="bold red"))
    parts.append(table)
    parts += breakdown_section(report)
    parts += cpu_profile_section(report)
    parts += findings_section(report)
    parts += capacity_section(report)
    parts.append(instruments_line(report))
    parts += [Text(f"warning: {w}", style="yellow") for w in report.get("warnings", [])]
    return Group(*parts)


def errors_line(report: Mapping[str, Any]) -> Text | None:
    """The window's failed requests by class, and the server's most frequent exception; None without errors."""
    classes = [c for c in report.get("errors_by_class") or () if isinstance(c, Mapping)]
    if not classes:
        return None
    words = ", ".join(f"{c.get('requests')} {c.get('class')}" for c in classes[:5])
    server = [e for e in report.get("server_errors") or () if isinstance(e, Mapping)]
    if server:
        first = server[0]
        words += f"; the server logged {first.get('count')} × {first.get('error')}" + (
            " (database)" if first.get("database") else "")
    return Text(f"errors by class: {words}", style="red")


def _load_words(load: Mapping[str, Any], users: Any) -> str:
    if load.get("model") == "open":
        return f"rate={load.get('offered_rps'):g}/s"
    return f"users={users}"


def load_line(load: Mapping[str, Any]) -> Text | None:
    """How the load was generated, when it was anything but one closed-loop Locust process."""
    parts: list[str] = []
    if load.get("model") == "open":
        lag = load.get("lag_ms") or {}
        parts.append(f"open loop: {load.get('offered_rps'):g} req/s offered, {_rps(load.get('scheduled_rps'))} scheduled "
                     f"and {_rps(load.get('sent_rps'))} sent per s in the window, schedule lag p99 "
                     f"{_ms2(lag.get('p99'))} ms (latency counts from the scheduled time), at most "
                     f"{load.get('connections_per_process')} connections per load process")
    if (load.get("processes") or 1) > 1:
        parts.append(f"Locust distributed: {load['processes']} worker processes")
    if pin := load.get("pinning"):
        parts.append(f"pinned: load generator on CPUs {pin.get('load')}, target on CPUs {pin.get('target')}")
    return Text("load: " + "; ".join(parts)) if parts else None


def breakdown_section(report: Mapping[str, Any]) -> list[Any]:
    """Mean ms per category for each endpoint, all requests and the slowest 1%, then one bar each."""
    if not report.get("attribution_ms"):
        return []
    rows: list[tuple[str, Mapping[str, float]]] = [
        (ep["name"], ep["attribution_ms"]) for ep in report["endpoints"] if ep.get("attribution_ms")
    ]
    rows.append(("all requests", report["attribution_ms"]))
    if report.get("attribution_p99_ms"):
        rows.append(("slowest 1%", report["attribution_p99_ms"]))
    title = Text("Where the time went (mean ms per request; the columns add up to the client latency)", style="bold")
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False,
                  caption=" ".join(f"{h}={c}" for c, h, *_ in CATEGORY_STYLE if h != c), caption_justify="left")
    table.add_column("endpoint", overflow="ellipsis", no_wrap=True, max_width=22)
    for _, header, _, _ in CATEGORY_STYLE:
        table.add_column(header, justify="right")
    table.add_column("total", justify="right", style="bold")
    for name, att in rows:
        table.add_row(name, *(_ms(att.get(c)) for c, *_ in CATEGORY_STYLE), _ms(sum(att.values())))
    bars = Table(box=None, padding=(0, 1), pad_edge=False, show_header=False)
    bars.add_column("endpoint", overflow="ellipsis", no_wrap=True, max_width=22)
    bars.add_column("bar", no_wrap=True)
    for name, att in rows:
        bars.add_row(name, proportional_bar(att, BAR_WIDTH))
    legend = Text("bars:")
    for _, header, letter, style in CATEGORY_STYLE:
        legend.append(" ")
        legend.append(letter, style=style)
        legend.append(f" {header}")
    acc = report.get("accounting") or {}
    calls = report.get("upstream_calls_per_request")
    upstream = f", {calls:.1f} upstream HTTP calls" if calls else ""
    note = Text(
        f"{report.get('hops_per_request') or 0:.1f} sync<->async hops, {report.get('queries_per_request') or 0:.1f} "
        f"queries{upstream} per request; {acc.get('matched_requests', 0)} requests matched to server records "
        f"({_pct(acc.get('match_rate'))}{_of_sample(report)}); per request, |other| is {_pct(acc.get('sum_check'))} "
        "of its latency on average"
    )
    return [title, table, bars, legend, note]


def _of_sample(report: Mapping[str, Any]) -> str:
    """' of the sampled requests …' when the run followed a sample of the requests, else ''."""
    otel = (report.get("instruments") or {}).get("otel") or {}
    rate = otel.get("sample_traces") if isinstance(otel, Mapping) else None
    return f" of the sampled ones, --sample-traces {rate:g}" if isinstance(rate, (int, float)) and rate < 1 else ""


def proportional_bar(att: Mapping[str, float], width: int) -> Text:
    """A bar of *width* cells split by category in proportion to the positive values (largest remainder)."""
    values = [(c, letter, style, max(0.0, att.get(c) or 0.0)) for c, _, letter, style in CATEGORY_STYLE]
    total = sum(v for *_, v in values)
    bar = Text()
    if total <= 0:
        return bar
    exact = [v * width / total for *_, v in values]
    cells = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: exact[i] - cells[i], reverse=True)[: width - sum(cells)]:
        cells[i] += 1
    for (_, letter, style, _), n in zip(values, cells):
        bar.append(letter * n, style=style)
    return bar


def cpu_profile_section(report: Mapping[str, Any]) -> list[Any]:
    """Category, share of on-CPU samples and the top functions of each category, largest first."""
    shares: Mapping[str, float] | None = report.get("cpu_profile")
    if not shares:
        return []
    top: Mapping[str, Sequence[Mapping[str, Any]]] = report.get("cpu_profile_top") or {}
    samples = report.get("instruments", {}).get("pyspy", {}).get("on_cpu_samples")
    title = Text("CPU profile (share of on-CPU py-spy samples" + (f", {samples} samples)" if samples else ")"),
                 style="bold")
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("category", no_wrap=True)
    table.add_column("share", justify="right")
    table.add_column("", no_wrap=True, width=12)
    table.add_column("top functions", overflow="ellipsis", no_wrap=True, max_width=62)
    for category, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        if share <= 0:
            continue
        functions = ", ".join(f"{_short(f['function'])} {f['share']:.0%}" for f in top.get(category, [])[:3])
        table.add_row(category, f"{share:.0%}", "█" * round(share * 12), functions)
    return [title, table]


def _short(function: str) -> str:
    """``func (path)`` without the path: the table has no room for both."""
    return function.split(" (", 1)[0]


def findings_section(report: Mapping[str, Any]) -> list[Any]:
    """Numbered findings: title with share, the detail, and what to try."""
    findings = report.get("findings")
    if findings is None:
        return []
    if not findings:
        return [Text("Findings: none above their thresholds", style="bold")]
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column()
    for i, f in enumerate(findings, 1):
        share = f"{f['share']:.0%} of {f['share_of']}" if f.get("share") is not None else "run validity"
        text = Text()
        text.append(f["title"], style="bold red" if f.get("share_of") == "validity" else "bold")
        text.append(f" ({share}): {f['detail']}\n")
        text.append(f"try: {f['try']}", style="dim")
        grid.add_row(f"{i}.", text)
    return [Text("Findings", style="bold"), grid]


def capacity_section(report: Mapping[str, Any]) -> list[Any]:
    """One capacity line and one CPU-check line."""
    cap = report.get("capacity")
    if not cap:
        return []
    limits = cap.get("limits_rps") or {}
    lim = ", ".join(f"{k} {v:.0f}" for k, v in limits.items() if v is not None)
    line = Text()
    line.append(
        f"{_ms2(cap.get('cpu_ms_per_request'))} ms worker CPU per request on {cap.get('cpus_usable')} usable cores "
        f"→ predicted max {_rps(cap.get('predicted_max_rps'))} req/s"
        + (f" (limits req/s: {lim})" if lim else "")
        + f"; measured {_rps(cap.get('measured_rps'))} req/s ({_pct(cap.get('utilisation'))}). "
    )
    line.append(f"Bottleneck: {cap.get('bottleneck')}", style="bold")
    line.append(f" — {cap.get('reason')}")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("Capacity:", line)
    check = cap.get("cpu_check") or {}
    if check.get("measured_worker_cores") is not None:
        grid.add_row("CPU check:", Text(
            f"ms per request × req/s = {_ms2(check.get('predicted_worker_cores'))} cores, workers measured "
            f"{_ms2(check.get('measured_worker_cores'))} cores; the requests' own accounted CPU explains "
            f"{_pct(check.get('accounted_ratio'))} of it"
        ))
    return [grid]


def _ms2(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _rps(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _otel_matched(otel: Mapping[str, Any]) -> str:
    """Requests matched to a server span; with --sample-traces, out of the sampled traces."""
    rate = otel.get("sample_traces") or 1.0
    share = "" if otel.get("match_rate") is None else f" ({otel['match_rate']:.1%})"
    if rate >= 1:
        text = f"{otel['matched_requests']} requests matched{share}"
    else:
        text = (f"{otel['matched_requests']} of {otel.get('sampled_requests', 0)} sampled traces matched "
                f"(match rate over sampled traces; --sample-traces {rate:g})")
    if missing := describe_unmatched(otel.get("unmatched") or {}):
        text += f", unmatched: {missing}"
    counts = otel.get("span_counts") or {}
    if counts.get("workers_counted"):
        text += f", {counts.get('lost', 0) + counts.get('write_failed', 0)} spans lost in the workers"
    if otel.get("complete") is False:
        text += " · INCOMPLETE (below 99%)"
    return text


def instruments_line(report: Mapping[str, Any]) -> Text:
    inst = report["instruments"]
    text = (
        f"py-spy: {inst['pyspy']['samples']} samples ({inst['pyspy']['idle_samples']} idle) "
        f"from {len(inst['pyspy']['samples_by_pid'])} processes · "
        f"OTel: {inst['otel']['spans']} spans, {_otel_matched(inst['otel'])} · "
        f"pyinstrument: {inst['pyinstrument']['profiles']} profiles"
    )
    acc = report.get("accounting")
    if acc is not None:
        text += f" · accounting: {acc.get('records', 0)} records"
        cost = (acc.get("workers") or {}).get("hook_cost_us_per_request")
        if cost is not None:
            text += f" (hooks ≈ {cost:.0f} µs per request)"
    text += _instrument_cost(report.get("instrument_cost"))
    return Text(text)


def _instrument_cost(cost: Any) -> str:
    """The instruments' own CPU in words ('' when the run has no figure)."""
    if not isinstance(cost, Mapping):
        return ""
    parts = []
    if isinstance(cost.get("pyspy_machine_share"), (int, float)):
        parts.append(f"py-spy {cost['pyspy_machine_share']:.1%} of the machine's CPU")
    if isinstance(cost.get("workers_us_per_request"), (int, float)):
        share = cost.get("workers_cpu_share")
        of = f", {share:.1%} of the workers' CPU" if isinstance(share, (int, float)) else ""
        parts.append(f"in the workers ≈ {cost['workers_us_per_request']:.0f} µs per request{of}")
    return f" · instruments' own CPU: {'; '.join(parts)}" if parts else ""


@register_report_renderer("terminal")
def render_terminal(report: dict[str, Any]) -> str:
    console = Console(record=True, width=WIDTH)
    with console.capture() as capture:
        console.print(report_table(report))
    return capture.get()
