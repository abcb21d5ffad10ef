"""Server-side SVG charts for the HTML report: line charts and stacked horizontal bars.

Every function returns one ``<svg class="chart">`` element as a string, to be inlined in an
HTML page.  Contracts:

* Every piece of text from the caller (titles, series names, labels, tooltips) is escaped
  with :func:`html.escape`; numbers are formatted here.  Nothing refers to an outside resource.
* Each series is a ``<g class="series" data-key="...">`` and each legend entry a
  ``<g class="legend-item" data-key="...">`` with the same key, so a script can toggle a
  series from its legend; tooltips are SVG ``<title>`` children (shown natively without a
  script).
* The root carries ``data-chart`` (the caller's kind) and ``data-marks`` (how many marks —
  line points or bar segments — were drawn), which the browser test checks.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 960
LINE_HEIGHT = 300
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_BOTTOM = 64, 18, 40
LEGEND_ROW = 18
CHAR_PX = 6.6  # estimated width of a 11px sans-serif character, for legend wrapping and label cut
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
              "#7f7f7f", "#bcbd22")


def run_color(i: int) -> str:
    """The colour of the *i*-th run or mode (cycles after ten)."""
    return RUN_COLORS[i % len(RUN_COLORS)]


@dataclass(frozen=True)
class Series:
    """One line: ``points`` (x, y; y None breaks the line), optional per-point ``intervals``
    (low, high) drawn as whiskers, ``hollow`` points (drawn unfilled: e.g. not valid), and
    ``markers`` (x, y, label) drawn as dots with a tooltip; ``x_unit``/``y_unit`` follow the
    numbers in the dots' tooltips."""

    name: str
    color: str
    points: Sequence[tuple[float, float | None]]
    dots: bool = False
    intervals: Sequence[tuple[float, float] | None] | None = None
    hollow: Sequence[bool] | None = None
    markers: Sequence[tuple[float, float, str]] = ()
    tip: str = ""
    x_unit: str = ""
    y_unit: str = ""


@dataclass(frozen=True)
class BarRow:
    """One stacked bar: ``values`` by category key (negative values stack leftwards of 0)."""

    label: str
    values: Mapping[str, float | None]
    tip: str = ""


def fmt(v: float) -> str:
    """A compact number: no trailing zeros, at most 3 significant decimals."""
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round ticks (1, 2, 2.5 or 5 × 10^k apart) covering ``[lo, hi]``: the first ≤ lo, the last ≥ hi
    (within a millionth of a step)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-6))
    first = math.floor(lo / step + 1e-6) * step
    ticks = [first]
    while ticks[-1] < hi - step * 1e-6:  # rounding noise (shares summing to 100.00001 %) adds no tick
        ticks.append(first + len(ticks) * step)
    return [round(t, 12) for t in ticks]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks at 1, 2 and 5 × 10^k from the last one ≤ lo to the first one ≥ hi (0 < lo; at least two)."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    every = [round(m * 10.0**k, 12) for k in range(a, b + 1) for m in (1, 2, 5)]
    first = max((t for t in every if t <= lo * (1 + 1e-9)), default=every[0])
    last = min((t for t in every if t >= hi * (1 - 1e-9)), default=every[-1])
    ticks = [t for t in every if first <= t <= last]
    return ticks if len(ticks) > 1 else [ticks[0], every[every.index(ticks[0]) + 1]]


class _Scale:
    """Maps data values to pixels, linear or log10."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool = False) -> None:
        self.log = log
        self.lo, self.hi = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
        self.p0, self.p1 = p0, p1

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(max(v, 1e-12))
        span = self.hi - self.lo or 1.0
        return round(self.p0 + (v - self.lo) / span * (self.p1 - self.p0), 2)


def _legend(entries: Sequence[tuple[str, str, str]], top: float) -> tuple[list[str], float]:
    """Legend items (key, label, colour) flowing left to right; returns the SVG and the height used."""
    out: list[str] = []
    x, y = MARGIN_LEFT, top
    for key, label, color in entries:
        w = 18 + len(label) * CHAR_PX + 14
        if x + w > WIDTH - MARGIN_RIGHT and x > MARGIN_LEFT:
            x, y = MARGIN_LEFT, y + LEGEND_ROW
        out.append(f'<g class="legend-item" data-key="{escape(key)}" tabindex="0">'
                   f'<rect x="{x}" y="{y}" width="12" height="12" rx="2" fill="{escape(color)}"/>'
                   f'<text x="{x + 16}" y="{y + 10}">{escape(label)}</text>'
                   f"<title>{escape(label)} (click to show or hide)</title></g>")
        x += w
    return out, (y - top + LEGEND_ROW if entries else 0)


def line_chart(kind: str, series: Sequence[Series], *, x_label: str, y_label: str, x_log: bool = False,
               y_log: bool = False, hlines: Sequence[tuple[float, str]] = (), y_max: float | None = None,
               step: bool = False) -> str:
    """Lines (one per series, optionally steps) on shared axes with a legend, guide lines
    ``hlines`` (y, label) dashed across the plot.  Log axes ignore values ≤ 0."""
    pts = [(x, y) for s in series for x, y in s.points if y is not None]
    pts += [(x, hi) for s in series for (x, _), iv in zip(s.points, s.intervals or (), strict=False) if iv
            for hi in iv[1:]]
    xs = [x for x, _ in pts if x > 0 or not x_log]
    ys = [y for _, y in pts if y > 0 or not y_log] + [y for y, _ in hlines]
    legend, legend_h = _legend([(f"s{i}", s.name, s.color) for i, s in enumerate(series)], 6)
    top = 6 + legend_h + 8
    bottom = LINE_HEIGHT + legend_h - MARGIN_BOTTOM
    x_ticks = (log_ticks(min(xs), max(xs)) if x_log else nice_ticks(min(xs), max(xs))) if xs else [0.0, 1.0]
    y_hi = y_max if y_max is not None else (max(ys) if ys else 1.0)
    y_ticks = (log_ticks(min(ys), y_hi) if y_log else nice_ticks(0.0, y_hi)) if ys else [0.0, 1.0]
    sx = _Scale(x_ticks[0], x_ticks[-1], MARGIN_LEFT, WIDTH - MARGIN_RIGHT, x_log)
    sy = _Scale(y_ticks[0], y_ticks[-1], bottom, top, y_log)
    parts = _axes(x_ticks, y_ticks, sx, sy, top, bottom, x_label, y_label)
    for y, label in hlines:
        parts.append(f'<g class="guide"><line x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{sy(y)}" '
                     f'y2="{sy(y)}"/><text x="{WIDTH - MARGIN_RIGHT - 4}" y="{sy(y) - 4}" text-anchor="end">'
                     f"{escape(label)}</text></g>")
    marks = 0
    for i, s in enumerate(series):
        body, n = _series(s, sx, sy, step, x_log, y_log)
        marks += n
        parts.append(f'<g class="series" data-key="s{i}">{body}</g>')
    return _svg(kind, LINE_HEIGHT + legend_h, marks, legend + parts)


def _series(s: Series, sx: _Scale, sy: _Scale, step: bool, x_log: bool, y_log: bool) -> tuple[str, int]:
    """One series' path, whiskers, dots and markers; returns the SVG and the points drawn."""
    d: list[str] = []
    prev: tuple[float, float] | None = None
    drawn = 0
    for x, y in s.points:
        if y is None or (x_log and x <= 0) or (y_log and y <= 0):
            prev = None
            continue
        px, py = sx(x), sy(y)
        if prev is None:
            d.append(f"M{px},{py}")
        elif step:
            d.append(f"H{px}V{py}")
        else:
            d.append(f"L{px},{py}")
        prev = (px, py)
        drawn += 1
    tip = f"<title>{escape(s.tip or s.name)}</title>"
    out = [f'<path d="{"".join(d)}" fill="none" stroke="{escape(s.color)}" stroke-width="2">{tip}</path>']
    for j, ((x, y), iv) in enumerate(zip(s.points, s.intervals or [None] * len(s.points), strict=True)):
        if y is None:
            continue
        hollow = bool(s.hollow and s.hollow[j])
        if iv and iv[1] > iv[0]:
            out.append(f'<line class="whisker" x1="{sx(x)}" x2="{sx(x)}" y1="{sy(iv[0])}" y2="{sy(iv[1])}" '
                       f'stroke="{escape(s.color)}"/>')
        if s.dots:
            fill = "#fff" if hollow else escape(s.color)
            span = f" [{fmt(iv[0])}–{fmt(iv[1])}]" if iv else ""
            note = " (not valid)" if hollow else ""
            out.append(f'<circle cx="{sx(x)}" cy="{sy(y)}" r="4" fill="{fill}" stroke="{escape(s.color)}" '
                       f'stroke-width="2"><title>{escape(s.name)}: {fmt(x)}{escape(s.x_unit)} → '
                       f"{fmt(y)}{escape(s.y_unit)}"
                       f"{span}{note}</title></circle>")
    for x, y, label in s.markers:
        if (x_log and x <= 0) or (y_log and y <= 0):
            continue
        out.append(f'<circle class="marker" cx="{sx(x)}" cy="{sy(y)}" r="3.5" fill="{escape(s.color)}">'
                   f"<title>{escape(label)}</title></circle>")
    return "".join(out), drawn


def _axes(x_ticks: Sequence[float], y_ticks: Sequence[float], sx: _Scale, sy: _Scale, top: float, bottom: float,
          x_label: str, y_label: str) -> list[str]:
    out = ['<g class="axes">']
    for t in y_ticks:
        out.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{sy(t)}" y2="{sy(t)}"/>'
                   f'<text x="{MARGIN_LEFT - 6}" y="{sy(t) + 4}" text-anchor="end">{fmt(t)}</text>')
    for t in x_ticks:
        out.append(f'<line class="tick" x1="{sx(t)}" x2="{sx(t)}" y1="{bottom}" y2="{bottom + 4}"/>'
                   f'<text x="{sx(t)}" y="{bottom + 16}" text-anchor="middle">{fmt(t)}</text>')
    out.append(f'<line class="axis" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{bottom}" y2="{bottom}"/>'
               f'<line class="axis" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" y1="{top}" y2="{bottom}"/>'
               f'<text class="label" x="{(MARGIN_LEFT + WIDTH - MARGIN_RIGHT) / 2}" y="{bottom + 32}" '
               f'text-anchor="middle">{escape(x_label)}</text>'
               f'<text class="label" transform="translate(14,{(top + bottom) / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text></g>')
    return out


def stacked_bars(kind: str, groups: Sequence[tuple[str, Sequence[BarRow]]],
                 categories: Sequence[tuple[str, str, str]], *, unit: str, total_unit: str | None = None,
                 label_width: int = 230, x_max: float | None = None) -> str:
    """Horizontal stacked bars, one per row, rows under optional group headings; ``categories``
    are (key, label, colour) in stacking order.  Positive values stack right of 0, negative ones
    left of it; each bar ends with its signed total in *total_unit* (default *unit*).  The axis
    covers every bar, or 0..*x_max* when given (for shares)."""
    bar_h, gap, head_h = 16, 6, 20
    legend, legend_h = _legend([(k, label, c) for k, label, c in categories], 6)
    y = 6 + legend_h + 6
    lows = [sum(min(0.0, v or 0.0) for v in r.values.values()) for _, rows in groups for r in rows]
    highs = [sum(max(0.0, v or 0.0) for v in r.values.values()) for _, rows in groups for r in rows]
    ticks = nice_ticks(min([0.0, *lows]), x_max if x_max is not None else (max([0.0, *highs]) or 1.0))
    left = MARGIN_LEFT + label_width - 60
    sx = _Scale(ticks[0], ticks[-1], left, WIDTH - MARGIN_RIGHT - 56)
    body: list[str] = []
    marks = 0
    cut = int(label_width / CHAR_PX)
    for heading, rows in groups:
        if heading:
            body.append(f'<text class="group" x="6" y="{y + 14}">{escape(heading)}</text>')
            y += head_h
        for row in rows:
            label = row.label if len(row.label) <= cut else row.label[: cut - 1] + "…"
            body.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{escape(label)}'
                        f"<title>{escape(row.tip or row.label)}</title></text>")
            pos, neg = 0.0, 0.0
            total = sum(v or 0.0 for v in row.values.values())
            for key, clabel, color in categories:
                v = row.values.get(key) or 0.0
                if v == 0:
                    continue
                a, b = (pos, pos + v) if v > 0 else (neg + v, neg)
                pos, neg = (b, neg) if v > 0 else (pos, a)
                share = f" ({v / total:.0%})" if total > 0 and v > 0 else ""
                body.append(f'<g class="series" data-key="{escape(key)}"><rect x="{sx(a)}" y="{y}" '
                            f'width="{max(0.5, round(sx(b) - sx(a), 2))}" height="{bar_h}" fill="{escape(color)}">'
                            f"<title>{escape(row.label)}: {escape(clabel)} {fmt(v)} {escape(unit)}{share}</title>"
                            "</rect></g>")
                marks += 1
            body.append(f'<text class="total" x="{sx(pos) + 4}" y="{y + 12}">{fmt(total)} '
                        f"{escape(unit if total_unit is None else total_unit)}</text>")
            y += bar_h + gap
    axis_y = y + 2
    axes = [f'<line class="axis" x1="{sx(ticks[0])}" x2="{sx(ticks[-1])}" y1="{axis_y}" y2="{axis_y}"/>']
    for t in ticks:
        axes.append(f'<line class="grid" x1="{sx(t)}" x2="{sx(t)}" y1="{6 + legend_h + 6}" y2="{axis_y}"/>'
                    f'<text x="{sx(t)}" y="{axis_y + 14}" text-anchor="middle">{fmt(t)}</text>')
    axes.append(f'<text class="label" x="{(sx(ticks[0]) + sx(ticks[-1])) / 2}" y="{axis_y + 30}" '
                f'text-anchor="middle">{escape(unit)}</text>')
    return _svg(kind, axis_y + 40, marks, legend + ['<g class="axes">', *axes, "</g>", *body])


def _svg(kind: str, height: float, marks: int, parts: Sequence[str]) -> str:
    return (f'<svg class="chart" data-chart="{escape(kind)}" data-marks="{marks}" viewBox="0 0 {WIDTH} '
            f'{round(height)}" width="{WIDTH}" height="{round(height)}">{"".join(parts)}</svg>')
