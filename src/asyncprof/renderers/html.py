"""``--html FILE``: one self-contained HTML page for a run, or for runs side by side.

:func:`html_report` gathers what the page needs from the run directories (the reports, each
run's :func:`~asyncprof.analysis.timeline.run_timeline`, and its on-CPU flamegraph when
:mod:`asyncprof.analysis.flame` and :mod:`asyncprof.renderers.flamegraph` exist) and
:func:`render_html` turns that into the page.  The page's contract:

* Offline: styles, scripts, charts and flamegraphs are inline; a Content-Security-Policy
  forbids every other source and allows only the page's own scripts (by hash), so the page
  loads nothing from the network even by mistake, and no injected script would run.
* Sections (each ``<section id=...>``, always present; one whose data is missing says why):
  ``summary``, ``latency`` (CDF per run), ``timeline`` (throughput and p99 per second),
  ``breakdown`` (stacked bars per endpoint and run; the gap when comparing), ``cpu``,
  ``sweep`` (curves when given a sweep), ``findings``, ``flamegraphs``, ``warnings``.
* Everything from the run directories (run ids, endpoint and function names, findings) is
  escaped; the data is also embedded as JSON in ``<script type="application/json"
  id="asyncprof-data">`` (``{"runs": [report], "timelines": [...], "gap", "sweep"}``) with
  ``<``, ``>`` and ``&`` escaped, so no string can close the element.
"""

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson

from asyncprof import __version__
from asyncprof.analysis.timeline import Timeline, run_timeline
from asyncprof.errors import UsageError
from asyncprof.renderers.html_sections import (
    breakdown_section, cpu_section, findings_section, latency_section, summary_section, sweep_section,
    timeline_section, warnings_section,
)
from asyncprof.run import Run

SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"), ("latency", "Latency distribution"), ("timeline", "Over time"),
    ("breakdown", "Where the time went"), ("cpu", "CPU profile"), ("sweep", "Sweep"), ("findings", "Findings"),
    ("flamegraphs", "Flamegraphs"), ("warnings", "Warnings"),
)
_SCRIPT = re.compile(r"<script\b[^>]*>(.*?)</script>", re.S | re.I)


@dataclass
class RunView:
    """One run on the page: its report, its timeline (None when the log could not be read), and
    its flamegraph SVG or the reason there is none."""

    report: dict[str, Any]
    timeline: Timeline | None = None
    flamegraph: str | None = None
    flamegraph_note: str | None = None


@dataclass
class Page:
    """Everything :func:`render_html` draws; ``gap`` is ``compare_reports``' gap, ``sweep`` a
    ``summarize_sweep`` result (with ``source`` naming its file)."""

    title: str
    runs: list[RunView]
    gap: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None
    sweep_source: str | None = None
    notes: list[str] = field(default_factory=list)


def html_report(runs: Sequence[Run], reports: Sequence[dict[str, Any]], *, gap: dict[str, Any] | None = None,
                sweep: dict[str, Any] | None = None, sweep_source: str | None = None,
                flamegraphs: bool = True) -> str:
    """The page for *runs* (with their *reports*, same order): one run, or a comparison with its *gap*."""
    if len(runs) != len(reports):
        raise ValueError("one report per run")
    views = []
    for run, report in zip(runs, reports, strict=True):
        svg, note = flamegraph_for(run) if flamegraphs else (None, "flamegraphs were not asked for")
        views.append(RunView(report, _timeline(run), svg, note))
    ids = [str(r.get("run_id")) for r in reports]
    title = f"asyncprof: {ids[0]}" if len(ids) == 1 else f"asyncprof: {len(ids)} runs compared"
    return render_html(Page(title, views, gap, sweep, sweep_source))


def _timeline(run: Run) -> Timeline | None:
    try:
        return run_timeline(run)
    except OSError:
        return None


def flamegraph_for(run: Run) -> tuple[str | None, str | None]:
    """The run's on-CPU flamegraph SVG, or None and why (the flamegraph modules are optional)."""
    try:
        from asyncprof.analysis.flame import build_flame
        from asyncprof.renderers.flamegraph import flamegraph_svg
    except ImportError as exc:
        return None, f"this asyncprof has no flamegraph renderer ({exc})"
    if not (run.pyspy_dir / "samples.txt").is_file():
        return None, "no py-spy samples in this run (py-spy was off or could not attach)"
    try:
        return flamegraph_svg(build_flame(run), title=f"{run.run_id}: on-CPU py-spy samples"), None
    except Exception as exc:  # noqa: BLE001 - a flamegraph failure must not cost the whole report
        return None, f"the flamegraph could not be drawn: {type(exc).__name__}: {exc}"


def read_sweep(path: Path) -> dict[str, Any]:
    """A sweep summary saved by ``asyncprof sweep`` (``traces/sweep-*.json``), checked for the keys
    the page draws; UsageError naming the file otherwise."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"no sweep file {path}", "give a traces/sweep-*.json written by asyncprof sweep") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UsageError(f"cannot read the sweep file {path}: {exc}") from None
    axis = data.get("axis", "users") if isinstance(data, dict) else None
    points = data.get("points") if isinstance(data, dict) else None
    ok = axis in ("users", "rate") and isinstance(points, list) and all(
        isinstance(p, dict) and isinstance(p.get("mode"), str) and isinstance(p.get(axis), (int, float))
        and isinstance(p.get("throughput_rps"), dict) and isinstance(p.get("p99_ms"), dict) for p in points)
    if not ok:
        raise UsageError(f"{path} is not a sweep summary", "give a traces/sweep-*.json written by asyncprof sweep")
    data.setdefault("axis", axis)
    return data


def render_html(page: Page) -> str:
    """The whole document (see the module's contract)."""
    script = _asset("report.js")
    hashes = [_sha256(script), *(h for v in page.runs if v.flamegraph for h in script_hashes(v.flamegraph))]
    csp = ("default-src 'none'; base-uri 'none'; form-action 'none'; style-src 'unsafe-inline'; "
           f"script-src {' '.join(dict.fromkeys(hashes))}")
    reports = [v.report for v in page.runs]
    sections = {
        "summary": summary_section(reports, page.gap),
        "latency": latency_section(page.runs),
        "timeline": timeline_section(page.runs),
        "breakdown": breakdown_section(reports, page.gap),
        "cpu": cpu_section(reports),
        "sweep": sweep_section(page.sweep, page.sweep_source, reports),
        "findings": findings_section(reports),
        "flamegraphs": _flamegraphs_section(page.runs),
        "warnings": warnings_section(reports, page.notes),
    }
    nav = "".join(f'<a href="#{key}">{escape(label)}</a>' for key, label in SECTIONS)
    body = "".join(f'<section id="{key}"><h2>{escape(label)}</h2>{sections[key]}</section>' for key, label in SECTIONS)
    data = {"runs": reports, "timelines": [v.timeline.to_json() if v.timeline else None for v in page.runs],
            "gap": page.gap, "sweep": page.sweep}
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(page.title)}</title><style>{_asset('report.css')}</style>"
        f"<script>{script}</script></head><body>"
        f"<header><h1>{escape(page.title)}</h1><nav>{nav}</nav></header><main>{body}</main>"
        f'<script type="application/json" id="asyncprof-data">{json_for_script(data)}</script>'
        f"<footer>asyncprof {escape(__version__)} · self-contained report: no network needed · the data above "
        "is in the element #asyncprof-data as JSON</footer></body></html>\n"
    )


def json_for_script(data: Any) -> str:
    """*data* as JSON that is safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` as
    ``\\u`` escapes (valid JSON; only ever inside strings), so no ``</script>`` can appear."""
    text = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _flamegraphs_section(views: Sequence[RunView]) -> str:
    parts = ['<p class="note">On-CPU py-spy samples of the workers, by stack (callers below callees): a '
             "frame's width is its share of the samples. Hover a frame for its numbers, click it to zoom, "
             "click a legend entry to highlight its category. <code>asyncprof flamegraph RUN</code> writes one as "
             "its own file (also <code>--wall</code>, <code>--diff OTHER_RUN</code>).</p>"]
    for v in views:
        run_id = str(v.report.get("run_id"))
        parts.append(f"<h3>{escape(run_id)}</h3>")
        if v.flamegraph is None:
            parts.append(f'<p class="note">No flamegraph: {escape(v.flamegraph_note or "not available")}.</p>')
        else:
            parts.append(f'<div class="flame-wrap">{v.flamegraph}</div>')
    return "".join(parts)


def script_hashes(markup: str) -> list[str]:
    """CSP source expressions (``'sha256-...'``) for the inline scripts of trusted *markup* (the
    flamegraph SVGs, whose script sits in a CDATA section: the hash covers the text inside it)."""
    out = []
    for body in _SCRIPT.findall(markup):
        if body.startswith("<![CDATA[") and body.endswith("]]>"):
            body = body[len("<![CDATA["):-len("]]>")]
        out.append(_sha256(body))
    return out


def _sha256(text: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def _asset(name: str) -> str:
    return files("asyncprof.renderers").joinpath("html_assets", name).read_text(encoding="utf-8")


def write_html(path: Path, text: str) -> None:
    """Write the page to *path* (UTF-8), creating its directory; UsageError if that fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
