"""``--html``: the page parses, has every section, escapes what runs contain, and needs no network."""

import base64
import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from asyncprof.analysis.compare import compare_reports
from asyncprof.analysis.report import build_report
from asyncprof.analysis.sweep import Trial, summarize_sweep
from asyncprof.cli import main
from asyncprof.errors import UsageError
from asyncprof.renderers.html import SECTIONS, html_report, json_for_script, read_sweep
from asyncprof.run import Run
from tests.unit.synthetic import WINDOW, Req, make_run, trace, write_records, write_requests, write_summary

HOSTILE = "</script><script>alert(1)</script>"
EVIL_TAG = "<img src=x onerror=alert(2)>"
ROOT = 'process 11:"gunicorn";thread (1): MainThread'
LOOP = "run (asyncio/runners.py:190);BaseEventLoop._run_once (asyncio/base_events.py:1922)"


class Page(HTMLParser):
    """Elements, attributes, scripts (with their types) and text of a page, as a browser parses them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.starts: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.text: list[str] = []
        self._script: dict[str, str | None] | None = None
        self._body: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))
        if tag == "script":
            self._script, self._body = dict(attrs), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._body)))
            self._script = None

    def handle_data(self, data: str) -> None:
        (self._body if self._script is not None else self.text).append(data)

    def ids(self) -> set[str]:
        return {str(a["id"]) for _, a in self.starts if a.get("id")}

    def charts(self) -> dict[str, int]:
        return {str(a["data-chart"]): int(str(a["data-marks"])) for t, a in self.starts
                if t == "svg" and a.get("data-chart")}


def hostile_run(parent: Path, run_id: str = HOSTILE, endpoint: str = "/items/" + HOSTILE, *,
                mode: str = "async", latency: float = 12.0) -> Run:
    """A complete synthetic run whose run id, endpoint, hop site and functions are markup."""
    cpu_window = {"seconds": 10.0, "workers_cpu_s": {"11": 0.2}, "locust_cpu_s": 0.5, "machine_busy_share": 0.3}
    run = make_run(parent, cpu_window=cpu_window, run_id=run_id,
                   instruments={"pyspy": {"enabled": True, "rate_hz": 20}, "otel": {"enabled": False},
                                "pyinstrument": {"enabled": False}, "accounting": {"enabled": True}},
                   config={"mode": mode, "scenario": "seed", "view": mode, "workers": 2, "users": 10, "warmup": 1.0})
    reqs = [Req(trace(i), latency_ms=latency + i % 7, name=endpoint if i % 2 else "/items/{id}",
                start=WINDOW[0] + i * 0.05,
                us={"wall_us": 9_000, "cpu_us": 3_000, "db_wait_us": 2_000, "thread_hop_us": 2_500, "hops": 14,
                    "queries": 2})
            for i in range(1, 150)]
    write_requests(run, reqs)
    write_records(run, 11, reqs)
    write_summary(run, 11, requests=len(reqs), hop_sites={f"{EVIL_TAG}.process_request": 2 * len(reqs)},
                  loop_thread_cpu_s=0.15)
    (run.pyspy_dir / "samples.txt").write_text(
        f"{ROOT};{LOOP};{EVIL_TAG} (asyncprof_target/views.py:12) 40\n"
        f"{ROOT};{LOOP};SyncToAsync.__call__ (asgiref/sync.py:567);Thread.start (threading.py:970) 60\n")
    return run


@pytest.fixture
def sweep() -> dict[str, Any]:
    trials = [Trial(mode, users, f"{mode}-{users}-{HOSTILE}", tput, p99, valid=users < 100)
              for mode, k in (("sync", 3.0), (HOSTILE, 1.0)) for users, tput, p99 in
              ((10, 100 * k, 20 / k), (50, 300 * k, 60 / k), (100, 320 * k, 250 / k))]
    return summarize_sweep(trials, slo_p99_ms=200)


def page_of(tmp_path: Path, sweep: dict[str, Any] | None = None) -> tuple[str, list[dict[str, Any]]]:
    runs = [hostile_run(tmp_path), hostile_run(tmp_path, "sync-" + HOSTILE, "/sync" + HOSTILE, mode="sync",
                                               latency=5.0)]
    comparison = compare_reports([build_report(r) for r in runs])
    return html_report(runs, comparison["runs"], gap=comparison["gap"], sweep=sweep, sweep_source="x.json"), \
        comparison["runs"]


def test_every_section_and_chart_is_there(tmp_path: Path, sweep: dict[str, Any]) -> None:
    text, _ = page_of(tmp_path, sweep)
    page = Page(text)
    assert {key for key, _ in SECTIONS} <= page.ids()
    charts = page.charts()
    for kind in ("cdf", "throughput", "p99", "breakdown", "gap", "cpu", "sweep-throughput", "sweep-p99"):
        assert charts.get(kind, 0) > 0, (kind, charts)
    assert text.startswith("<!DOCTYPE html>") and "Findings" in text


def test_hostile_strings_stay_text(tmp_path: Path, sweep: dict[str, Any]) -> None:
    text, reports = page_of(tmp_path, sweep)
    page = Page(text)
    # Exactly the page's own scripts: its script, the JSON data and each flamegraph's script (if any).
    kinds = [a.get("type") for a, _ in page.scripts]
    assert kinds.count("application/json") == 1
    assert not any("alert(" in body for a, body in page.scripts if a.get("type") != "application/json")
    assert all(t != "img" for t, _ in page.starts)  # the <img> in a function name never became an element
    visible = "".join(page.text)
    assert HOSTILE in visible and EVIL_TAG in visible  # shown as text, literally
    data_body = next(body for a, body in page.scripts if a.get("type") == "application/json")
    assert "</" not in data_body
    data = json.loads(data_body)
    assert [r["run_id"] for r in data["runs"]] == [r["run_id"] for r in reports]
    assert data["runs"][0]["run_id"] == HOSTILE


def test_json_for_script_escapes_markup() -> None:
    text = json_for_script({"a": "</script><!-- & -->", "b": [1.5, None]})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- & -->", "b": [1.5, None]}


def test_nothing_is_loaded_from_the_network(tmp_path: Path, sweep: dict[str, Any]) -> None:
    text, _ = page_of(tmp_path, sweep)
    page = Page(text)
    for tag, attrs in page.starts:
        for name in ("src", "href", "xlink:href", "data", "action", "poster"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value or value.startswith(("#", "data:")), (tag, name, value)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", text, re.I)
    assert "@import" not in text
    # The only http(s) URLs are XML namespace names (flamegraph SVGs), never fetched.
    assert set(re.findall(r"https?://[^\s\"'<>)]+", text)) <= {"http://www.w3.org/2000/svg"}
    csp = next(a["content"] for t, a in page.starts if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in str(csp)


def test_csp_allows_exactly_the_page_scripts(tmp_path: Path) -> None:
    text, _ = page_of(tmp_path)
    page = Page(text)
    csp = str(next(a["content"] for t, a in page.starts if t == "meta" and a.get("http-equiv") ==
                   "Content-Security-Policy"))
    allowed = set(re.findall(r"'sha256-([^']+)'", csp))
    for attrs, body in page.scripts:
        if attrs.get("type") == "application/json":
            continue
        if body.startswith("<![CDATA[") and body.endswith("]]>"):  # an SVG script (flamegraph)
            body = body[len("<![CDATA["):-len("]]>")]
        assert base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() in allowed
    assert "unsafe-inline" not in csp.split("script-src", 1)[1]


def test_missing_data_says_why(tmp_path: Path) -> None:
    run = make_run(tmp_path, accounting=False)  # no requests, no accounting, no py-spy
    text = html_report([run], [build_report(run)])
    page = Page(text)
    assert {key for key, _ in SECTIONS} <= page.ids()
    visible = " ".join(page.text)
    for why in ("No request in any measured window", "No per-request breakdown", "No CPU profile", "No sweep given",
                "No flamegraph"):
        assert why in visible, why
    assert page.charts() == {}


def test_flamegraph_is_embedded_when_the_renderer_exists(tmp_path: Path) -> None:
    pytest.importorskip("asyncprof.renderers.flamegraph")
    pytest.importorskip("asyncprof.analysis.flame")
    run = hostile_run(tmp_path)
    page = Page(html_report([run], [build_report(run)]))
    flames = [a for t, a in page.starts if t == "svg" and "asyncprof-flamegraph" in str(a.get("class"))]
    assert len(flames) == 1
    assert len([a for a, _ in page.scripts if a.get("type") != "application/json"]) == 2
    assert all(t != "img" for t, _ in page.starts)


def test_read_sweep_checks_the_file(tmp_path: Path, sweep: dict[str, Any]) -> None:
    good = tmp_path / "sweep.json"
    good.write_text(json.dumps(sweep))
    assert read_sweep(good)["points"] == sweep["points"]
    bad = tmp_path / "bad.json"
    for content in ("{", '{"points": 3}', '{"axis": "users", "points": [{"mode": "sync"}]}', "[]"):
        bad.write_text(content)
        with pytest.raises(UsageError):
            read_sweep(bad)
    with pytest.raises(UsageError, match="no sweep file"):
        read_sweep(tmp_path / "missing.json")


def test_cli_writes_the_page(tmp_path: Path, sweep: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = hostile_run(tmp_path, "run-a"), hostile_run(tmp_path, "run-b", mode="sync", latency=4.0)
    sweep_file = tmp_path / "sweep.json"
    sweep_file.write_text(json.dumps(sweep))
    out = tmp_path / "out" / "report.html"
    assert main(["report", str(a.path), "--html", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "HTML report written to" in captured.err
    assert "run-a" in out.read_text()
    assert main(["compare", str(a.path), str(b.path), "--html", str(out), "--sweep", str(sweep_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gap"] is not None  # --json still prints
    charts = Page(out.read_text()).charts()
    assert {"gap", "sweep-p99"} <= set(charts)
    assert main(["report", str(a.path), "--sweep", str(sweep_file)]) == 2
    assert "--html" in capsys.readouterr().err
    assert main(["report", str(a.path), "--html", str(out), "--sweep", str(tmp_path / "nope.json")]) == 2
