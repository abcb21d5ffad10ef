"""A :class:`~asyncprof.analysis.flame.Flame` as one self-contained, interactive SVG flamegraph.

:func:`flamegraph_svg` (stable signature, also used to embed flamegraphs in HTML reports) returns
a complete ``<svg>`` element: inline ``<style>`` and ``<script>``, no external resource, no XML
declaration (so it can be written to a ``.svg`` file or inlined in HTML as is).

Drawing contract (tests parse the SVG with :mod:`xml.etree`):

* Root at the bottom, callees above their callers, children left to right by frame text.  Each
  frame is ``<g class="f c-<category>" data-d=<depth>>`` holding ``<title>`` (first line: the frame
  text ``func (path:line)``; then file, category, samples, share, ms per request), ``<rect>`` and
  ``<text>``.  A rect's width is ``(WIDTH - 2 * PAD) * node.value / root.value``: the frame's share
  of the samples (plain flames) or of the root's ms per request (diff flames).
* Fill: the category's colour (:data:`CATEGORY_COLOURS`, lightness varied a little per function so
  neighbours differ); frames whose samples all wait (``--wall``) use :data:`WAITING_COLOUR`.  Diff
  flames colour by :meth:`Flame.delta_ms`: red (class ``more``) where RUN spends more per request,
  blue (``less``) where less, intensity proportional to the delta over the largest delta of any
  frame but the root; ``same`` (near white) within 1 % of it.
* A legend (``<g class="lg" data-category=...>``) names the categories drawn, with their share.
* Frames narrower than *min_share* of the root are not drawn (nor their callees); a ``note`` line
  says how many and what share of the root they hold.
* Hover shows the frame's title in the details line, click zooms into a frame (click the root or
  "Reset zoom" to zoom out), "Search" (or Ctrl-F / "/" over the graph) highlights frames whose text
  matches a regular expression and shows the matched share; a legend entry highlights its category.
"""

import colorsys
import hashlib
import json
import shutil
import subprocess
import webbrowser
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import orjson

from asyncprof.analysis.categories import CATEGORIES, split_frame
from asyncprof.analysis.flame import ROOT_CATEGORY, WAITING, Flame, FlameNode, sorted_children
from asyncprof.errors import AsyncprofError, UsageError
from asyncprof.renderers.flamegraph_assets import CSS, JS

WIDTH = 1200
PAD = 10
FRAME_HEIGHT = 16
CHAR_WIDTH = 6.6  # 11 px Verdana, average; only decides how much of a label fits
MIN_SHARE = 0.001
MATCH_FILL = "#e040fb"

#: (hue degrees, saturation, lightness) per category; chosen so the thread hop stands out.
CATEGORY_COLOURS: dict[str, tuple[float, float, float]] = {
    "app": (120, 0.45, 0.55),
    "django": (170, 0.50, 0.45),
    "db_driver": (275, 0.45, 0.65),
    "http_server": (30, 0.70, 0.58),
    "event_loop": (50, 0.85, 0.55),
    "thread_pool": (350, 0.80, 0.55),
    "otel_and_profilers": (210, 0.25, 0.62),
    "other": (0, 0.0, 0.68),
    WAITING: (200, 0.35, 0.86),
    ROOT_CATEGORY: (0, 0.0, 0.80),
}
WAITING_COLOUR = CATEGORY_COLOURS[WAITING]
CATEGORY_LABELS: dict[str, str] = {
    "app": "app: the project's code",
    "django": "django",
    "db_driver": "db_driver: psycopg2 / asyncpg",
    "http_server": "http_server: gunicorn, uvicorn, h11 …",
    "event_loop": "event_loop: asyncio machinery",
    "thread_pool": "thread_pool: thread hops (thread start/join, executors, asgiref sync_to_async)",
    "otel_and_profilers": "otel_and_profilers: our instruments",
    "other": "other: no rule matched",
    WAITING: "waiting: stacks py-spy caught waiting (--wall)",
}
DIFF_MORE, DIFF_LESS, DIFF_SAME = "#ff4040", "#4060ff", "#e6e6e6"


def category_colour(category: str, name: str = "") -> str:
    """``#rrggbb`` for a frame of *category*; *name* shifts the lightness by up to ±6 %."""
    hue, sat, light = CATEGORY_COLOURS.get(category, CATEGORY_COLOURS["other"])
    if name:
        jitter = int(hashlib.md5(split_frame(name)[0].encode()).hexdigest()[:4], 16) / 0xFFFF
        light = min(0.95, max(0.2, light + (jitter - 0.5) * 0.12))
    return _hex(colorsys.hls_to_rgb(hue / 360, light, sat))


def diff_colour(delta: float, scale: float) -> tuple[str, str]:
    """(fill, class) for a per-request *delta* against the largest delta *scale*."""
    intensity = min(1.0, abs(delta) / scale) if scale > 0 else 0.0
    if intensity < 0.01:
        return DIFF_SAME, "same"
    fade = round(225 - 190 * intensity)
    return (f"#ff{fade:02x}{fade:02x}", "more") if delta > 0 else (f"#{fade:02x}{fade:02x}ff", "less")


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def _visible(flame: Flame, min_share: float) -> tuple[list[tuple[FlameNode, int, float]], int, float]:
    """(node, depth, x offset in root units) of the frames drawn; count and value of those hidden."""
    out: list[tuple[FlameNode, int, float]] = []
    hidden_frames, hidden_value = 0, 0.0
    limit = flame.root.value * min_share
    todo: list[tuple[FlameNode, int, float]] = [(flame.root, 0, 0.0)]
    while todo:
        node, depth, x = todo.pop()
        out.append((node, depth, x))
        for child in sorted_children(node):
            if child.value <= 0:
                continue
            if child.value < limit:
                hidden_frames += sum(1 for _ in child.walk())
                hidden_value += child.value
            else:
                todo.append((child, depth + 1, x))
            x += child.value
    return out, hidden_frames, hidden_value


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _tooltip(flame: Flame, node: FlameNode) -> str:
    if node is flame.root:
        lines = [f"all ({'all samples' if flame.wall else 'on-CPU samples'})"]
    else:
        func, _, rest = node.name.partition(" (")
        lines = [node.name, f"function: {func}", f"file: {rest.rstrip(')') or '?'}", f"category: {node.category}"]
    if flame.other is not None:
        delta = flame.delta_ms(node) or 0.0
        lines += [f"{flame.run_id}: {_ms(flame.ms_per_request(node))} ms/request ({node.samples} samples)",
                  f"{flame.other.run_id}: {_ms(flame.other_ms_per_request(node))} ms/request "
                  f"({node.other_samples} samples)",
                  f"difference: {delta:+.3f} ms/request"]
        return "\n".join(lines)
    share = node.samples / flame.samples if flame.samples else 0.0
    lines.append(f"{node.samples} samples ({share:.2%}), {flame.ms(node):.0f} ms; self {node.self_samples}")
    if flame.wall and node.idle_samples:
        lines.append(f"waiting: {node.idle_samples} samples")
    if flame.requests:
        lines.append(f"{_ms(flame.ms_per_request(node))} ms/request")
    return "\n".join(lines)


def _subtitle(flame: Flame) -> list[str]:
    """One or two lines under the title: what was sampled and what it costs per request."""
    kind = "all stacks, waiting ones included (--wall)" if flame.wall else "on-CPU"
    filters = "".join([f"; pid {', '.join(map(str, flame.pids))}" if flame.pids else "",
                       f"; category {flame.category} only" if flame.category else ""])
    if flame.other is not None:
        a, b = flame.ms_per_request(flame.root) or 0.0, flame.other_ms_per_request(flame.root) or 0.0
        return [f"RUN {flame.run_id}: {a:.2f} ms/request ({flame.requests} requests)   vs   "
                f"OTHER {flame.other.run_id}: {b:.2f} ms/request ({flame.other.requests} requests)",
                f"difference {a - b:+.2f} ms per request ({kind}{filters}); width: the larger of the two per "
                "request; red: RUN spends more, blue: less"]
    rate = 1000.0 / flame.interval_ms
    per_request = (f", {flame.ms_per_request(flame.root):.2f} ms/request over {flame.requests} requests"
                   if flame.requests else "")
    return [f"{flame.run_id} ({flame.mode}): {flame.samples} samples, {kind}, at {rate:g} Hz = "
            f"{flame.ms(flame.root):.0f} ms{per_request}{filters}"]


def _legend(flame: Flame, y: float, drawn: set[str]) -> tuple[list[str], float]:
    """Legend elements from *y* down, and the y below them: the diff colours, or every category with
    samples of its own or a *drawn* frame, with its share of the samples (the report's CPU profile)."""
    if flame.other is not None:
        scale = _diff_scale(flame)
        entries = [("more", DIFF_MORE, "RUN spends more per request"),
                   ("less", DIFF_LESS, "RUN spends less per request"),
                   ("same", DIFF_SAME, f"about the same (largest difference: {scale:.3f} ms/request)")]
    else:
        counts = flame.category_samples()
        total = flame.samples or 1
        entries = [(c, category_colour(c), f"{c} {counts[c] / total:.1%}")
                   for c in (*CATEGORIES, WAITING) if counts.get(c) or c in drawn]
    out: list[str] = []
    x = float(PAD)
    for key, colour, text in entries:
        width = 18 + len(text) * 7.0 + 16
        if x + width > WIDTH - PAD and x > PAD:
            x, y = PAD, y + 18
        tip = CATEGORY_LABELS.get(key, text)
        if flame.other is None:
            tip += "; the share counts the samples whose own frame (the leaf) is of this category"
        out.append(f'<g class="lg" data-category={quoteattr(key)}><title>{escape(tip)} (click to highlight)'
                   f'</title><rect x="{x:.1f}" y="{y - 11}" width="14" height="14" fill="{colour}"/>'
                   f'<text x="{x + 18:.1f}" y="{y}">{escape(text)}</text></g>')
        x += width
    return out, y + 10


def _diff_scale(flame: Flame) -> float:
    deltas = [abs(flame.delta_ms(n) or 0.0) for n, _ in flame.root.walk() if n is not flame.root]
    return max(deltas, default=0.0)


def flamegraph_svg(flame: Flame, *, title: str, min_share: float = MIN_SHARE) -> str:
    """The whole interactive SVG document for *flame* (see the module docstring for its structure)."""
    drawn, hidden_frames, hidden_value = _visible(flame, min_share)
    depth = max(d for _, d, _ in drawn)
    digest = hashlib.sha1(f"{title}|{flame.run_id}|{flame.root.value}|{len(drawn)}".encode()).hexdigest()[:10]
    svg_id = f"fg-{digest}"
    subtitle = _subtitle(flame)
    categories = {WAITING if n.waiting else n.category for n, d, _ in drawn if d}
    legend, legend_bottom = _legend(flame, 66 + 16 * (len(subtitle) - 1), categories)
    top = legend_bottom + 8
    bottom = top + (depth + 1) * FRAME_HEIGHT
    notes = list(flame.notes)
    if hidden_frames:
        notes.append(f"{hidden_frames} frames narrower than {min_share:.1%} not drawn: they hold "
                     f"{hidden_value / flame.root.value:.2%} of the width, shown as part of their callers")
    height = bottom + 30 + 16 * len(notes)
    inner = WIDTH - 2 * PAD
    unit = inner / flame.root.value if flame.root.value else 0.0
    scale = _diff_scale(flame) if flame.other is not None else 0.0
    total_per_request = None if flame.other is not None else flame.ms_per_request(flame.root)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" id="{svg_id}" class="asyncprof-flamegraph" '
        f'width="{WIDTH}" height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}" '
        f'data-run={quoteattr(flame.run_id)} data-samples="{flame.samples}" '
        f'data-mode="{"diff" if flame.other is not None else ("wall" if flame.wall else "cpu")}">',
        f"<style><![CDATA[{CSS.replace('__ID__', svg_id)}]]></style>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{height:.0f}" fill="#fafafa"/>',
        f'<text class="title" x="{WIDTH / 2}" y="24">{escape(title)}</text>',
        *(f'<text class="subtitle" x="{WIDTH / 2}" y="{44 + 16 * i}">{escape(line)}</text>'
          for i, line in enumerate(subtitle)),
        f'<text class="button reset hidden" x="{PAD}" y="24">Reset zoom</text>',
        f'<text class="button search" x="{WIDTH - PAD}" y="24" text-anchor="end">Search</text>',
        *legend,
        '<g class="frames">',
    ]
    for node, d, x in drawn:
        w = node.value * unit
        rx, ry = PAD + x * unit, bottom - (d + 1) * FRAME_HEIGHT
        if flame.other is not None:
            fill, cls = diff_colour(flame.delta_ms(node) or 0.0, scale) if d else (DIFF_SAME, "same")
            cls = f"{cls} c-{node.category}"
        else:
            colour_key = WAITING if node.waiting else node.category
            fill = category_colour(colour_key, node.name if d else "")
            cls = f"c-{node.category}" + (" waiting" if node.waiting else "")
        label = node.name if d else _root_label(flame)
        fits = int((w - 6) / CHAR_WIDTH)
        text = "" if fits < 3 else (label if len(label) <= fits else label[: fits - 2] + "..")
        parts.append(f'<g class="f {cls}" data-d="{d}"><title>{escape(_tooltip(flame, node))}</title>'
                     f'<rect x="{rx:.3f}" y="{ry}" width="{w:.3f}" height="{FRAME_HEIGHT - 1}" fill="{fill}"/>'
                     f'<text x="{rx + 3:.3f}" y="{ry + 11.5}">{escape(text)}</text></g>')
    parts.append("</g>")
    parts.append(f'<text class="details" x="{PAD}" y="{bottom + 20}"> </text>')
    parts.append(f'<text class="matched" x="{WIDTH - PAD}" y="{bottom + 20}"></text>')
    parts += [f'<text class="note" x="{PAD}" y="{bottom + 38 + 16 * i}">{escape(n)}</text>'
              for i, n in enumerate(notes)]
    config = {"id": svg_id, "x0": PAD, "width": inner, "charWidth": CHAR_WIDTH,
              "totalMsPerRequest": total_per_request, "matchFill": MATCH_FILL}
    parts.append(f"<script><![CDATA[{JS.replace('__CONFIG__', json.dumps(config))}]]></script>")
    parts.append("</svg>\n")
    return "\n".join(parts)


def _root_label(flame: Flame) -> str:
    if flame.other is not None:
        delta = flame.delta_ms(flame.root) or 0.0
        return f"all: {delta:+.3f} ms CPU per request ({flame.run_id} vs {flame.other.run_id})"
    per_request = f", {flame.ms_per_request(flame.root):.3f} ms/request" if flame.requests else ""
    return f"all: {flame.samples} samples{per_request}"


# --- files: what `asyncprof flamegraph` writes and opens ---------------------------------------------

FORMATS: tuple[str, ...] = ("svg", "speedscope", "collapsed")
_SUFFIXES = {"svg": ".svg", "speedscope": ".speedscope.json", "collapsed": ".collapsed.txt"}


def output_name(flame: Flame, fmt: str) -> str:
    """The default file name inside the run directory: ``flamegraph[-wall][-pid..][-category][-vs-OTHER]``
    plus the format's suffix, so different views of one run do not overwrite each other."""
    parts = ["flamegraph"]
    if flame.wall:
        parts.append("wall")
    if flame.pids:
        parts.append("pid" + "_".join(map(str, flame.pids)))
    if flame.category:
        parts.append(flame.category)
    if flame.other is not None:
        parts.append(f"vs-{flame.other.run_id}")
    return "-".join(parts) + _SUFFIXES[fmt]


def flame_title(flame: Flame) -> str:
    """The title :func:`write_flame` gives the SVG."""
    if flame.other is not None:
        return f"CPU per request: {flame.run_id} vs {flame.other.run_id}"
    return f"{'Wall-clock' if flame.wall else 'On-CPU'} flamegraph: {flame.run_id}"


def write_flame(flame: Flame, fmt: str, path: Path, *, title: str | None = None) -> None:
    """Write *flame* to *path* as ``svg`` (:func:`flamegraph_svg`), ``speedscope`` JSON or Brendan
    Gregg's ``collapsed`` stacks (streamed).  Raises :class:`UsageError` for a diff flame in another
    format than SVG, :class:`AsyncprofError` when the file cannot be written."""
    from asyncprof.analysis.flame import collapsed_lines
    from asyncprof.renderers.speedscope import flame_to_speedscope

    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if flame.other is not None and fmt != "svg":
        raise UsageError(f"--diff draws an SVG, not {fmt}", "drop --format or --diff")
    try:
        if fmt == "svg":
            path.write_text(flamegraph_svg(flame, title=title or flame_title(flame)), encoding="utf-8")
        elif fmt == "speedscope":
            path.write_bytes(orjson.dumps(flame_to_speedscope(flame, title or flame_title(flame))))
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(collapsed_lines(flame))
    except OSError as exc:
        raise AsyncprofError(f"cannot write {path}: {exc.strerror or exc}", "choose another file with -o") from None


def open_flame(path: Path, fmt: str) -> str:
    """Open a written file for viewing; returns one line saying what happened.

    SVG: the default browser (:mod:`webbrowser`).  speedscope: ``npx speedscope FILE`` (speedscope
    from npm, in the background) when ``npx`` is on PATH.  collapsed: nothing to open.
    """
    if fmt == "speedscope":
        npx = shutil.which("npx")
        if npx is None:
            return f"npx not found: open {path} in https://www.speedscope.app (or install Node.js for npx speedscope)"
        subprocess.Popen([npx, "--yes", "speedscope", str(path)], stdin=subprocess.DEVNULL,  # noqa: S603
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        return f"opening {path} with npx speedscope"
    if fmt == "collapsed":
        return f"nothing to open for collapsed stacks: feed {path} to flamegraph.pl or speedscope"
    if webbrowser.open(path.resolve().as_uri()):
        return f"opened {path} in the browser"
    return f"no browser could be started: open {path} yourself"
