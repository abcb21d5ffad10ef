"""The HTML report's sections, each a function of report dicts (and timelines) returning HTML.

Every function returns a fragment that is complete on its own: a chart, a table or a note
saying why the data is missing.  Every value taken from a report goes through
:func:`html.escape` (``_e``); charts come from :mod:`asyncprof.renderers.html_charts`, which
escapes its own text.
"""

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from asyncprof.analysis.attribution import ATTRIBUTION_CATEGORIES
from asyncprof.analysis.categories import CATEGORIES as CPU_CATEGORIES
from asyncprof.renderers.html_charts import BarRow, Series, fmt, line_chart, run_color, stacked_bars

if TYPE_CHECKING:
    from asyncprof.renderers.html import RunView

ATTRIBUTION_COLORS: Mapping[str, str] = {
    "cpu": "#d62728", "db_wait": "#1f77b4", "db_connect": "#17becf", "upstream_wait": "#2ca02c",
    "event_loop": "#9467bd", "thread_hop": "#e6b400", "gil_wait": "#ff9896", "os_run_queue": "#ff7f0e",
    "blocking": "#e377c2", "server_queue": "#8c8c8c", "other": "#c7c7c7",
}
CPU_COLORS: Mapping[str, str] = {
    "app": "#2ca02c", "django": "#1f77b4", "db_driver": "#17becf", "http_server": "#bcbd22",
    "event_loop": "#9467bd", "thread_pool": "#e6b400", "otel_and_profilers": "#8c564b", "other": "#c7c7c7",
}
_GREY = "#aaaaaa"


def _e(value: Any) -> str:
    """Any value as escaped text (None as a dash)."""
    return "–" if value is None else escape(str(value))


def _num(value: Any, digits: int = 1) -> str:
    return f"{value:,.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _run_id(report: Mapping[str, Any]) -> str:
    return str(report.get("run_id"))


def _load(report: Mapping[str, Any]) -> str:
    load = _d(report.get("load"))
    if load.get("model") == "open":
        return f"{_num(load.get('offered_rps'), 0)} req/s offered (open loop)"
    return f"{_e(report.get('users'))} users"


def summary_section(reports: Sequence[Mapping[str, Any]], gap: Mapping[str, Any] | None) -> str:
    """One table row per run (throughput, latency, errors, CPU per request, bottleneck), the runs
    not valid for conclusions, and the comparison's verdict."""
    head = ("run", "mode / view", "scenario", "workers × load", "requests", "req/s", "mean", "p50", "p90", "p99", "max",
            "errors", "CPU ms/req", "bottleneck")
    rows = []
    for r in reports:
        lat, cap = _d(r.get("latency_ms")), _d(r.get("capacity"))
        status = "" if r.get("status") == "complete" else f'<br><span class="muted">{_e(r.get("status"))}</span>'
        if r.get("valid") is False:
            status += '<br><span class="invalid">not valid for conclusions</span>'
        errors = _e(r.get("errors")) + (f" ({_pct(r.get('error_rate'))})" if r.get("errors") else "")
        cells = [f'<td class="text run">{_e(_run_id(r))}{status}</td>',
                 f'<td class="text">{_e(r.get("mode"))} / {_e(r.get("view"))}</td>',
                 f'<td class="text">{_e(r.get("scenario"))}</td>',
                 f'<td class="text">{_e(r.get("workers"))} × {_load(r)}</td>',
                 f"<td>{_e(r.get('requests'))}</td>",
                 f"<td><b>{_num(r.get('throughput_rps'))}</b></td>",
                 *(f"<td>{_num(lat.get(k))}</td>" for k in ("mean", "p50", "p90", "p99", "max")),
                 f"<td>{errors}</td>", f"<td>{_num(cap.get('cpu_ms_per_request'), 2)}</td>",
                 f'<td class="text">{_e(cap.get("bottleneck"))}</td>']
        rows.append(f"<tr>{''.join(cells)}</tr>")
    table = (f'<div class="scroll"><table class="summary"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}'
             f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
             '<p class="note">Latency in ms over the measured window (client side); CPU ms per request: the '
             "workers' kernel-measured CPU over the window divided by its requests.</p>")
    out = [table]
    for r in reports:
        if r.get("valid") is False:
            reasons = "; ".join(str(x) for x in r.get("invalid_reasons") or []) or "see its findings"
            out.append(f'<p class="invalid">NOT VALID for conclusions: {_e(_run_id(r))}: {_e(reasons)}</p>')
    for r in reports:
        cap = _d(r.get("capacity"))
        if cap.get("reason"):
            out.append(f"<p><b>{_e(_run_id(r))}</b>: predicted max {_num(cap.get('predicted_max_rps'), 0)} req/s, "
                       f"measured {_num(cap.get('measured_rps'), 0)}; bottleneck <b>{_e(cap.get('bottleneck'))}</b>: "
                       f"{_e(cap.get('reason'))}</p>")
    if gap:
        out.append(f'<div class="verdict">{_e(gap.get("verdict"))}</div>')
    return "".join(out)


def latency_section(views: Sequence["RunView"]) -> str:
    """The latency CDF of each run's window, with its p50, p90 and p99 marked."""
    series = []
    for i, v in enumerate(views):
        if not v.timeline or not v.timeline.cdf:
            continue
        lat = _d(v.report.get("latency_ms"))
        marks = [(float(lat[k]), q, f"{_run_id(v.report)}: {k} {fmt(float(lat[k]))} ms")
                 for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)) if isinstance(lat.get(k), (int, float))]
        series.append(Series(_run_id(v.report), run_color(i), v.timeline.cdf, markers=marks,
                             tip=f"{_run_id(v.report)}: {v.timeline.requests} requests"))
    if not series:
        return _note("No request in any measured window: no latency distribution.")
    xs = [ms for s in series for ms, _ in s.points if ms > 0]
    log = bool(xs) and max(xs) / min(xs) > 20
    chart = line_chart("cdf", series, x_label="latency ms" + (" (log scale)" if log else ""),
                       y_label="share of requests at most this slow", x_log=log, y_max=1.0, step=True)
    return _note("Each line: the share of the measured window's requests (y) that took at most x ms; "
                 "dots mark p50, p90 and p99. Further right is slower.") + chart


def timeline_section(views: Sequence["RunView"]) -> str:
    """Throughput and p99 latency per second of the measured window, one line per run."""
    usable = [(i, v) for i, v in enumerate(views) if v.timeline and v.timeline.t_s]
    if not usable:
        return _note("No request log in the measured window: no time series.")
    rps, p99 = [], []
    for i, v in usable:
        tl = v.timeline
        assert tl is not None
        dots = len(tl.t_s) <= 120
        name = _run_id(v.report)
        mid = [tl.mid_s(b) for b in range(len(tl.t_s))]
        rps.append(Series(name, run_color(i), list(zip(mid, tl.throughput_rps, strict=True)), dots=dots,
                          x_unit=" s", y_unit=" req/s"))
        p99.append(Series(name, run_color(i), list(zip(mid, tl.p99_ms, strict=True)), dots=dots,
                          x_unit=" s", y_unit=" ms"))
    bin_s = usable[0][1].timeline.bin_s if usable[0][1].timeline else 1.0
    return (_note(f"Per {fmt(bin_s)} s of the measured window (x: the middle of each bin, seconds after the window "
                  "opened). Closed loop counts "
                  "requests started, open loop answers received; p99 is over the requests started in each bin.")
            + "<h3>Throughput</h3>"
            + line_chart("throughput", rps, x_label="seconds into the window", y_label="requests per second")
            + "<h3>p99 latency</h3>"
            + line_chart("p99", p99, x_label="seconds into the window", y_label="p99 latency ms"))


def breakdown_section(reports: Sequence[Mapping[str, Any]], gap: Mapping[str, Any] | None) -> str:
    """Stacked bars of mean ms per category: each endpoint × run, all requests and the slowest 1%
    per run, then (comparing) the gap from the best to the worst run per category."""
    with_att = [r for r in reports if r.get("attribution_ms")]
    if not with_att:
        return _note("No per-request breakdown: accounting was off or matched no request (see the warnings).")
    cats = [(c, c, ATTRIBUTION_COLORS.get(c, _GREY)) for c in ATTRIBUTION_CATEGORIES]
    names = list(dict.fromkeys(ep.get("name") for r in with_att for ep in r.get("endpoints") or []))
    groups: list[tuple[str, list[BarRow]]] = []
    for name in names:
        rows = [BarRow(_run_id(r), ep["attribution_ms"], f"{name} · {_run_id(r)}")
                for r in with_att for ep in r.get("endpoints") or []
                if ep.get("name") == name and ep.get("attribution_ms")]
        if rows:
            groups.append((f"endpoint {name}", rows))
    if len(names) > 1:
        groups.append(("all requests", [BarRow(_run_id(r), r["attribution_ms"]) for r in with_att]))
    slow = [BarRow(_run_id(r), r["attribution_p99_ms"]) for r in with_att if r.get("attribution_p99_ms")]
    if slow:
        groups.append(("slowest 1% of requests", slow))
    out = [_note("Mean ms per request by category; each bar adds up to the client latency of the requests "
                 "matched to a server record. <code>other</code> is what the server's wall time leaves "
                 "unexplained (signed)."),
           stacked_bars("breakdown", groups, cats, unit="ms per request", total_unit="ms")]
    per_run = [f"<li>{_e(_run_id(r))}: {_num(r.get('hops_per_request'))} sync↔async hops, "
               f"{_num(r.get('queries_per_request'))} queries, {_num(r.get('upstream_calls_per_request'))} upstream "
               f"calls per request; {_e(_d(r.get('accounting')).get('matched_requests'))} requests matched</li>"
               for r in with_att]
    out.append(f"<ul>{''.join(per_run)}</ul>")
    if gap and gap.get("ms_per_request"):
        deltas = {c: float(d) for c, d in gap["ms_per_request"].items() if isinstance(d, (int, float)) and d}
        rows = [BarRow(c, {c: d}) for c, d in sorted(deltas.items(), key=lambda cd: -abs(cd[1]))]
        lat = _d(gap.get("latency_ms"))
        out.append(f"<h3>The gap: {_e(gap.get('to'))} minus {_e(gap.get('from'))}, ms per request</h3>")
        out.append(_note(f"{_num(lat.get('difference'))} ms per request in all; named categories explain "
                         f"{_pct(gap.get('explained_share'))} of it."))
        if rows:
            out.append(stacked_bars("gap", [("", rows)], [(c, c, ATTRIBUTION_COLORS.get(c, _GREY)) for c in deltas],
                                    unit="ms per request", total_unit="ms", label_width=160))
    return "".join(out)


def cpu_section(reports: Sequence[Mapping[str, Any]]) -> str:
    """Share of on-CPU samples per category for each run (stacked bars) and each category's top functions."""
    with_cpu = [r for r in reports if r.get("cpu_profile")]
    if not with_cpu:
        return _note("No CPU profile: py-spy was off, could not attach, or recorded no on-CPU sample.")
    known = list(CPU_CATEGORIES) + sorted({c for r in with_cpu for c in r["cpu_profile"]} - set(CPU_CATEGORIES))
    rows = [BarRow(_run_id(r), {c: 100 * float(s) for c, s in r["cpu_profile"].items() if s},
                   f"{_run_id(r)}: {_d(_d(r.get('instruments')).get('pyspy')).get('on_cpu_samples')} on-CPU samples")
            for r in with_cpu]
    out = [_note("Share of the workers' on-CPU py-spy samples by where the code lives."),
           stacked_bars("cpu", [("", rows)], [(c, c, CPU_COLORS.get(c, _GREY)) for c in known],
                        unit="% of on-CPU samples", total_unit="%", x_max=100.0)]
    for r in with_cpu:
        top = _d(r.get("cpu_profile_top"))
        lines = []
        for cat, share in sorted(r["cpu_profile"].items(), key=lambda kv: -(kv[1] or 0)):
            if not share:
                continue
            fns = "<br>".join(f"{_e(f.get('function'))} <span class=\"muted\">{_pct(f.get('share'))}</span>"
                              for f in top.get(cat) or [] if isinstance(f, dict))
            lines.append(f'<tr><td class="text">{_e(cat)}</td><td>{_pct(share)}</td><td class="text">{fns}</td></tr>')
        out.append(f"<details{' open' if len(with_cpu) == 1 else ''}><summary>top functions of "
                   f"{_e(_run_id(r))}</summary><table><thead><tr><th>category</th><th>share</th><th>top functions "
                   f"(share of all on-CPU samples)</th></tr></thead><tbody>{''.join(lines)}</tbody></table></details>")
    return "".join(out)


def sweep_section(sweep: Mapping[str, Any] | None, source: str | None,
                  reports: Sequence[Mapping[str, Any]] = ()) -> str:
    """Throughput and p99 against load per mode (median with its interval; hollow: not valid); a
    mode is drawn in the colour of the first of *reports* (the page's runs) in that mode."""
    if not sweep:
        return _note("No sweep given. Add <code>--sweep traces/sweep-&lt;time&gt;.json</code> (written by "
                     "<code>asyncprof sweep</code>) to <code>report --html</code> or <code>compare --html</code> "
                     "to draw its curves here.")
    axis = str(sweep.get("axis") or "users")
    unit = "users" if axis == "users" else "req/s offered"
    points = [p for p in sweep.get("points") or [] if isinstance(p, dict)]
    modes = list(dict.fromkeys(str(p.get("mode")) for p in points))
    colors = _mode_colors(modes, reports)
    tput, p99 = [], []
    for mode in modes:
        curve = sorted((p for p in points if str(p.get("mode")) == mode), key=lambda p: float(p[axis]))
        for target, key, y_unit in ((tput, "throughput_rps", " req/s"), (p99, "p99_ms", " ms")):
            target.append(Series(
                mode, colors[mode], [(float(p[axis]), _float(_d(p[key]).get("median"))) for p in curve], dots=True,
                intervals=[_interval(_d(p[key])) for p in curve], hollow=[p.get("valid") is False for p in curve],
                x_unit=f" {unit}", y_unit=y_unit))
    slo = sweep.get("slo_p99_ms")
    guides = [(float(slo), f"p99 target {fmt(float(slo))} ms")] if isinstance(slo, (int, float)) else []
    within = _d(sweep.get(f"max_{axis}_within_slo"))
    knee = _d(sweep.get("knee"))
    verdicts = "".join(f"<li>{_e(m)}: sustains {_e(within.get(m))} {unit} within the p99 target; knee at "
                       f"{_e(knee.get(m))} {unit}</li>" for m in modes)
    src = f" from <code>{_e(source)}</code>" if source else ""
    return (_note(f"Median over trials with its 95% interval{src}; hollow points were not valid "
                  "(load generator saturated or errors above 1%).")
            + "<h3>Throughput</h3>"
            + line_chart("sweep-throughput", tput, x_label=unit, y_label="requests per second")
            + "<h3>p99 latency</h3>"
            + line_chart("sweep-p99", p99, x_label=unit, y_label="p99 latency ms", hlines=guides)
            + f"<ul>{verdicts}</ul>")


def _mode_colors(modes: Sequence[str], reports: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each mode's colour: its first run's on the page, else the next colour no run uses."""
    colors: dict[str, str] = {}
    for i, r in enumerate(reports):
        colors.setdefault(str(r.get("mode")), run_color(i))
    spare = (run_color(i) for i in range(len(reports), len(reports) + len(modes)))
    return {m: colors.get(m) or next(spare) for m in modes}


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _interval(v: Mapping[str, Any]) -> tuple[float, float] | None:
    lo, hi = _float(v.get("ci_low")), _float(v.get("ci_high"))
    return (lo, hi) if lo is not None and hi is not None else None


def findings_section(reports: Sequence[Mapping[str, Any]]) -> str:
    """Each run's findings in rank order: title, share, detail, what to try, evidence."""
    out = []
    for r in reports:
        if len(reports) > 1:
            out.append(f"<h3>{_e(_run_id(r))}</h3>")
        findings = r.get("findings")
        if findings is None:
            out.append(_note("No findings in this report."))
            continue
        if not findings:
            out.append(_note("No finding above its threshold."))
            continue
        items = []
        for f in findings:
            f = _d(f)
            share = (f"{_pct(f.get('share'))} of {_e(f.get('share_of'))}" if f.get("share") is not None
                     else "run validity")
            cls = ' class="invalid"' if f.get("share_of") == "validity" else ""
            evidence = "; ".join(f"{_e(k)} = {_evidence_value(v)}" for k, v in _d(f.get("evidence")).items())
            items.append(f"<li><b{cls}>{_e(f.get('title'))}</b> ({share}): {_e(f.get('detail'))}"
                         f'<div class="try">try: {_e(f.get("try"))}</div>'
                         + (f'<details class="evidence"><summary>evidence</summary>{evidence}</details>'
                            if evidence else "") + "</li>")
        out.append(f'<ol class="findings">{"".join(items)}</ol>')
    return "".join(out)


def _evidence_value(v: Any) -> str:
    """A finding's evidence value, escaped: numbers to 4 significant digits, the rest as compact JSON
    cut at 400 characters."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (int, str)) or v is None:
        return _e(v)
    text = json.dumps(v, default=str, ensure_ascii=False)
    return _e(text if len(text) <= 400 else text[:399] + "…")


def warnings_section(reports: Sequence[Mapping[str, Any]], notes: Sequence[str]) -> str:
    """The reports' warnings (what is missing and why), per run, and the page's own notes."""
    out = [f"<p>{_e(n)}</p>" for n in notes]
    for r in reports:
        warnings = [w for w in r.get("warnings") or [] if isinstance(w, str)]
        if warnings:
            items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
            out.append(f"<details><summary>{_e(_run_id(r))}: {len(warnings)} warnings</summary><ul>{items}</ul>"
                       "</details>")
        else:
            out.append(_note(f"{_e(_run_id(r))}: no warnings."))
    return "".join(out)
