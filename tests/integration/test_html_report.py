"""The HTML report in a real headless Chromium: it loads from a file, offline, with no console
error, no script injected by hostile names, and every chart and flamegraph drawn.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: commands on
fd 3, answers and events on fd 4, NUL-separated JSON), so console messages, uncaught exceptions,
CSP violations and JavaScript dialogs are all seen, with no extra dependency.  The tests skip,
saying so, where no Chromium is installed (Debian: ``apt-get install chromium``).
"""

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncprof.analysis.report import build_report
from asyncprof.analysis.sweep import Trial, summarize_sweep
from asyncprof.run import resolve_run
from tests.integration.helpers import SHORT, asyncprof
from tests.unit.test_html_report import EVIL_TAG, HOSTILE, hostile_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LOAD_TIMEOUT = 60.0
# dup first (the pipe's ends may be 3 or 4 already), then make 3 and 4 survive the exec.
_TRAMPOLINE = ("import os, sys; a, b = os.dup(int(sys.argv[1])), os.dup(int(sys.argv[2])); "
               "os.dup2(a, 3); os.dup2(b, 4); os.set_inheritable(3, True); os.set_inheritable(4, True); "
               "os.execv(sys.argv[3], sys.argv[3:])")

# Evaluated in the page after load: what a reader would see, as JSON.
CHECK = """JSON.stringify((() => {
  const root = document.documentElement;
  const box = (el) => { const b = el.getBoundingClientRect(); return {w: b.width, h: b.height}; };
  return {
    ready: root.dataset.ready, charts: Number(root.dataset.charts), drawn: Number(root.dataset.chartsDrawn),
    sections: [...document.querySelectorAll("main > section")].map((s) => s.id),
    chartList: [...document.querySelectorAll("svg.chart")].map((c) => Object.assign(box(c), {
      kind: c.dataset.chart, marks: Number(c.dataset.marks),
      shapes: c.querySelectorAll(".series path[d^='M'], .series rect, .series circle").length})),
    flames: [...document.querySelectorAll("svg.asyncprof-flamegraph")].map((f) => Object.assign(box(f), {
      frames: f.querySelectorAll("g.f").length})),
    titlesLeft: document.querySelectorAll("svg.chart title").length,
    tips: document.querySelectorAll("svg.chart [data-tip]").length,
    images: document.images.length,
  };
})())"""

# Clicks a legend entry (its series must hide) and a flamegraph frame (the flamegraph's own
# script must zoom: its "Reset zoom" button appears).
INTERACT = """JSON.stringify((() => {
  const item = document.querySelector("svg.chart .legend-item");
  const key = item.getAttribute("data-key");
  item.dispatchEvent(new MouseEvent("click", {bubbles: true}));
  const series = [...item.ownerSVGElement.querySelectorAll(".series")]
    .filter((g) => g.getAttribute("data-key") === key);
  const flame = document.querySelector("svg.asyncprof-flamegraph");
  let zoomed = null;
  if (flame) {
    const frame = flame.querySelector("g.f[data-d='1'] rect");
    frame.dispatchEvent(new MouseEvent("click", {bubbles: true}));
    zoomed = !flame.querySelector(".reset").classList.contains("hidden");
  }
  return {legendHidden: series.length > 0 && series.every((g) => g.style.display === "none"), zoomed};
})())"""


def chromium() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium installed (Debian: apt-get install chromium): the HTML report's browser test needs it")


class Browser:
    """A headless Chromium driven over ``--remote-debugging-pipe``; one page, events collected."""

    def __init__(self, binary: str) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="asyncprof-chromium-")
        self._log = open(Path(self._profile.name) / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        flags = ["--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={self._profile.name}", "--window-size=1280,1800", "about:blank"]
        # The protocol wants its pipe on fds 3 (commands) and 4 (answers): a tiny Python puts it there
        # and execs Chromium (no preexec_fn: the test process may be gevent-patched by Locust's import).
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(to_child_r), str(from_child_w), binary, *flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
            pass_fds=(to_child_r, from_child_w), start_new_session=True)
        os.close(to_child_r)
        os.close(from_child_w)
        self._pending: list[dict[str, Any]] = []
        self._buffer = b""
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self.session = self._attach()

    def _receive(self, deadline: float) -> bool:
        """Read what Chromium sent until *deadline* (no threads: the test process may be gevent-patched
        by Locust's import); False if the pipe closed."""
        ready, _, _ = select.select([self._from_child], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return True
        chunk = os.read(self._from_child, 1 << 20)
        if not chunk:
            return False
        self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        self._pending += [json.loads(m) for m in messages]
        return True

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = LOAD_TIMEOUT) -> dict[str, Any]:
        """Send a command and wait for its answer (events arriving meanwhile are kept)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._next(deadline, method)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def _next(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while not self._pending:
            if time.monotonic() >= deadline:
                raise AssertionError(f"Chromium did not answer {waiting_for} in time")
            if not self._receive(deadline):
                log = (Path(self._profile.name) / "chromium.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"Chromium closed the protocol pipe while waiting for {waiting_for}: {log}")
        msg = self._pending.pop(0)
        if "method" in msg:
            self.events.append(msg)
            if msg["method"] == "Page.javascriptDialogOpening":  # it would block the page: an injected script?
                raise AssertionError(f"a script in the page opened a dialog: {msg['params'].get('message')!r}")
        return msg

    def wait_event(self, method: str, timeout: float = LOAD_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not any(e["method"] == method for e in self.events):
            self._next(deadline, method)
        return next(e for e in self.events if e["method"] == method)

    def _attach(self) -> str:
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        return str(session)

    def load(self, path: Path, *, report: bool = True) -> None:
        """Open *path* and wait for its load event and (a *report*) the page's own readiness mark."""
        self.events.clear()
        self.send("Page.navigate", {"url": path.resolve().as_uri()}, session=self.session)
        self.wait_event("Page.loadEventFired")
        deadline = time.monotonic() + (10 if report else 0)
        while self.evaluate("document.documentElement.dataset.ready || ''") != "1" and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # let late console messages arrive

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                           session=self.session)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, error log entries (CSP, network), dialogs."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails']}")
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p['args']]}")
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                out.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif e["method"] == "Page.javascriptDialogOpening":
                out.append(f"dialog: {p.get('message')}")
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except AssertionError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        self._log.close()
        self._profile.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser(chromium())
    try:
        yield b
    finally:
        b.close()


def assert_drawn(b: Browser, path: Path, charts: set[str], flames: int) -> dict[str, Any]:
    """*path* loads with no problem, every section is there, every chart (at least *charts*) and
    *flames* flamegraphs are drawn with non-zero size."""
    b.load(path)
    assert b.problems() == []
    state = json.loads(b.evaluate(CHECK))
    assert state["ready"] == "1", state
    assert state["sections"] == ["summary", "latency", "timeline", "breakdown", "cpu", "sweep", "findings",
                                 "flamegraphs", "warnings"]
    kinds = {c["kind"] for c in state["chartList"]}
    assert charts <= kinds, kinds
    for c in state["chartList"]:
        assert c["marks"] > 0 and c["shapes"] > 0 and c["w"] > 300 and c["h"] > 50, c
    assert state["drawn"] == state["charts"] == len(state["chartList"])
    assert state["titlesLeft"] == 0 and state["tips"] > 0  # the script turned titles into tooltips
    assert len(state["flames"]) == flames and all(f["frames"] > 1 and f["w"] > 300 for f in state["flames"])
    assert state["images"] == 0
    moved = json.loads(b.evaluate(INTERACT))
    assert moved["legendHidden"] is True
    assert moved["zoomed"] is (True if flames else None)
    assert b.problems() == []
    return state


def test_the_browser_check_sees_what_it_must_catch(browser: Browser, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" content=\"default-src "
                    "'none'; script-src 'sha256-2XIeBSNK8hE5p8AVYdl0W1RBQv8xbE3RM0dcLsq2oZw='\"></head><body>"
                    "<script>document.title = 'blocked by the policy'</script>"
                    "<img src=\"http://127.0.0.1:9/x.png\"></body></html>")
    browser.load(page, report=False)
    problems = " ".join(browser.problems())
    assert "Content Security Policy" in problems and "127.0.0.1:9" in problems, problems
    page.write_text("<!DOCTYPE html><html><body><script>console.error('boom'); throw new Error('bang')</script>"
                    "</body></html>")
    browser.load(page, report=False)
    problems = " ".join(browser.problems())
    assert "boom" in problems and "bang" in problems, problems


def test_hostile_names_run_no_script(browser: Browser, tmp_path: Path) -> None:
    from asyncprof.analysis.compare import compare_reports
    from asyncprof.renderers.html import html_report

    runs = [hostile_run(tmp_path), hostile_run(tmp_path, "sync-" + HOSTILE, mode="sync", latency=4.0)]
    comparison = compare_reports([build_report(r) for r in runs])
    sweep = summarize_sweep([Trial(HOSTILE, u, HOSTILE, 100.0 * u, 10.0 + u, True) for u in (1, 5, 10)], 200)
    path = tmp_path / "hostile.html"
    path.write_text(html_report(runs, comparison["runs"], gap=comparison["gap"], sweep=sweep))
    flames = 2 if _has_flamegraphs() else 0
    assert_drawn(browser, path, {"cdf", "throughput", "p99", "breakdown", "gap", "cpu", "sweep-p99"}, flames)
    text = browser.evaluate("document.body.innerText")
    assert HOSTILE in text and EVIL_TAG in text  # shown as text; no dialog opened (problems() is empty)


@pytest.mark.integration
def test_real_runs_report_and_compare_in_chromium(browser: Browser, traces: Path, service_url: str,
                                                  tmp_path: Path) -> None:
    for mode in ("sync", "async"):
        proc = asyncprof("record", "--mode", mode, "--db", service_url, "--out", str(traces), "--no-pyinstrument",
                         "--no-otel", *SHORT)
        assert proc.returncode == 0, proc.stderr[-2000:]
    names = sorted(p.name for p in traces.iterdir())
    reports = [build_report(resolve_run(str(traces / n))) for n in names]
    sweep = summarize_sweep([Trial(r["mode"], r["users"], r["run_id"], r["throughput_rps"], r["latency_ms"]["p99"],
                                   r["valid"] is not False) for r in reports], 200)
    sweep_file = tmp_path / "sweep.json"
    sweep_file.write_text(json.dumps(sweep))
    single, both = tmp_path / "report.html", tmp_path / "compare.html"
    proc = asyncprof("report", names[1], "--out", str(traces), "--html", str(single))
    assert proc.returncode == 0 and "HTML report written to" in proc.stderr, proc.stderr
    proc = asyncprof("compare", *names, "--out", str(traces), "--html", str(both), "--sweep", str(sweep_file))
    assert proc.returncode == 0, proc.stderr
    flames = 1 if _has_flamegraphs() else 0
    assert_drawn(browser, single, {"cdf", "throughput", "p99", "breakdown", "cpu"}, flames)
    state = assert_drawn(browser, both, {"cdf", "throughput", "p99", "breakdown", "gap", "cpu", "sweep-throughput",
                                         "sweep-p99"}, 2 * flames)
    assert {c["kind"] for c in state["chartList"]} >= {"gap"}


def _has_flamegraphs() -> bool:
    try:
        import asyncprof.analysis.flame  # noqa: F401
        import asyncprof.renderers.flamegraph  # noqa: F401
    except ImportError:
        return False
    return True
