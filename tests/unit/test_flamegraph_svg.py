"""The flamegraph SVG (parsed with xml.etree) and the ``asyncprof flamegraph`` command on small runs."""

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from asyncprof import cli
from asyncprof.analysis.flame import build_flame, diff_flame
from asyncprof.renderers import flamegraph as fg
from asyncprof.renderers.flamegraph import PAD, WIDTH, category_colour, flamegraph_svg
from tests.unit.test_flame import BASIC, HOP, LOOP, SYNC, VIEW, line, samples_run

NS = {"s": "http://www.w3.org/2000/svg"}
INNER = WIDTH - 2 * PAD


@dataclass(frozen=True)
class Drawn:
    """One drawn frame: name (its title's first line), title, classes, depth and geometry."""

    name: str
    title: str
    classes: list[str]
    d: int
    x: float
    w: float
    y: float
    fill: str
    label: str


def frames(svg: str) -> list[Drawn]:
    """Every frame drawn in *svg*, in document order."""
    out = []
    for g in ET.fromstring(svg).iterfind(".//s:g[@class]", NS):
        classes = g.get("class", "").split()
        if "f" not in classes:
            continue
        rect, text, title = g.find("s:rect", NS), g.find("s:text", NS), g.find("s:title", NS)
        assert rect is not None and text is not None and title is not None
        out.append(Drawn(name=(title.text or "").split("\n")[0], title=title.text or "", classes=classes,
                         d=int(g.get("data-d", "-1")), x=float(rect.get("x", "0")), w=float(rect.get("width", "0")),
                         y=float(rect.get("y", "0")), fill=rect.get("fill", ""), label=text.text or ""))
    return out


def by_name(fs: list[Drawn], prefix: str) -> Drawn:
    return next(f for f in fs if f.name.startswith(prefix))


def test_widths_are_sample_shares_and_callees_sit_above(tmp_path: Path) -> None:
    flame = build_flame(samples_run(tmp_path, BASIC))
    svg = flamegraph_svg(flame, title="t")
    fs = frames(svg)
    root = next(f for f in fs if f.d == 0)
    assert root.w == pytest.approx(INNER) and root.x == PAD
    for prefix, samples in [("UvicornWorker.run", 100), ("MiddlewareMixin.__acall__", 30),
                            ("SyncToAsync.__call__", 30), ("Thread.start", 20), ("seed_async", 30)]:
        assert by_name(fs, prefix).w == pytest.approx(INNER * samples / 100, abs=1e-3), prefix
    # Children left to right by frame text inside their parent; the deeper, the higher up.
    acall, view = by_name(fs, "MiddlewareMixin.__acall__"), by_name(fs, "seed_async")
    handle = by_name(fs, "Handle._run")
    assert handle.x == acall.x < view.x == pytest.approx(float(acall.x) + float(acall.w))
    assert acall.d == handle.d + 1 and acall.y == float(handle.y) - 16
    assert "150.000 ms/request" in str(by_name(fs, "SyncToAsync.__call__").title)
    assert "30 samples (30.00%)" in str(by_name(fs, "SyncToAsync.__call__").title)


def test_categories_colour_frames_and_fill_the_legend(tmp_path: Path) -> None:
    svg = flamegraph_svg(build_flame(samples_run(tmp_path, BASIC)), title="t")
    fs = frames(svg)
    hop = by_name(fs, "Thread.start")
    assert "c-thread_pool" in hop.classes
    assert hop.fill == category_colour("thread_pool", str(hop.name))
    assert "c-app" in by_name(fs, "seed_async").classes
    root = ET.fromstring(svg)
    legend = {g.get("data-category"): g for g in root.iterfind(".//s:g[@class='lg']", NS)}
    # Every category drawn, with its share of the samples (0 for callers-only categories).
    assert set(legend) == {"app", "django", "event_loop", "http_server", "thread_pool"}
    django = legend["django"].find("s:text", NS)
    assert django is not None and django.text == "django 0.0%"
    swatch = legend["thread_pool"].find("s:rect", NS)
    assert swatch is not None and swatch.get("fill") == category_colour("thread_pool")
    text = legend["thread_pool"].find("s:text", NS)
    assert text is not None and text.text == "thread_pool 30.0%"
    # Frames of different categories get different hues.
    assert category_colour("thread_pool") != category_colour("event_loop")


def test_wall_colours_waiting_frames_apart(tmp_path: Path) -> None:
    svg = flamegraph_svg(build_flame(samples_run(tmp_path, BASIC), wall=True), title="t")
    select = by_name(frames(svg), "EpollSelector.select")
    assert "waiting" in select.classes
    assert select.fill == category_colour("waiting", str(select.name))
    assert 'data-category="waiting"' in svg and 'data-mode="wall"' in svg


def test_pid_filter_changes_the_drawing(tmp_path: Path) -> None:
    svg = flamegraph_svg(build_flame(samples_run(tmp_path, BASIC), pids=[11]), title="t")
    fs = frames(svg)
    assert by_name(fs, "SyncToAsync.__call__").w == pytest.approx(INNER * 30 / 60, abs=1e-3)
    assert "pid 11" in svg


def test_diff_is_red_where_run_spends_more_per_request(tmp_path: Path) -> None:
    a = build_flame(samples_run(tmp_path / "a", BASIC, requests=10))
    b = build_flame(samples_run(tmp_path / "b", [line(VIEW, 80), line(SYNC, 120)], requests=40, rate=100))
    svg = flamegraph_svg(diff_flame(a, b), title="diff")
    fs = frames(svg)
    hop, sync = by_name(fs, "SyncToAsync.__call__"), by_name(fs, "SyncWorker.handle_request")
    assert "more" in hop.classes and "less" in sync.classes
    red = str(hop.fill)
    assert red.startswith("#ff") and int(red[3:5], 16) < 0xff  # red, not white
    assert str(sync.fill).endswith("ff") and str(sync.fill)[1:3] != "ff"
    # Widths in ms per request, the larger of the two runs: seed_async 150 (RUN) vs 20 (OTHER).
    root = next(f for f in fs if f.d == 0)
    view = by_name(fs, "seed_async")
    assert float(view.w) / float(root.w) == pytest.approx(150.0 / (500.0 + 30.0), abs=1e-4)
    assert "+130.000 ms/request" in str(view.title)
    # The stronger the difference, the stronger the colour.
    assert int(str(hop.fill)[3:5], 16) <= int(str(view.fill)[3:5], 16)
    assert 'data-mode="diff"' in svg and "RUN spends more per request" in svg


def test_narrow_frames_are_hidden_with_a_note(tmp_path: Path) -> None:
    lines = [line(VIEW, 10_000)] + [line(f"{LOOP};leaf_{i} (m.py:{i})", 1) for i in range(3000)]
    flame = build_flame(samples_run(tmp_path, lines))
    svg = flamegraph_svg(flame, title="t")
    fs = frames(svg)
    assert not any(str(f.name).startswith("leaf_") for f in fs)
    assert len(fs) < 20 and len(svg) < 60_000
    assert "3000 frames narrower than 0.1% not drawn: they hold 23.08% of the width" in svg
    # Everything stays drawn when asked.
    assert len(frames(flamegraph_svg(flame, title="t", min_share=0))) > 3000


def test_svg_is_self_contained_and_escaped(tmp_path: Path) -> None:
    lines = [line("_run_module_as_main (<frozen runpy>:198);a&b (x.py:1)", 3)]
    svg = flamegraph_svg(build_flame(samples_run(tmp_path, lines)), title="<t> & co")
    root = ET.fromstring(svg)  # well-formed despite <frozen runpy> and &
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.find("s:script", NS) is not None and root.find("s:style", NS) is not None
    assert [f.name for f in frames(svg)][1:] == ["_run_module_as_main (<frozen runpy>:198)", "a&b (x.py:1)"]
    assert not re.search(r"\b(href|src)=|@import|url\(", svg)
    assert set(re.findall(r"https?://[^\s\"')]+", svg)) == {"http://www.w3.org/2000/svg"}
    assert not svg.startswith("<?xml")  # can be inlined in HTML as is
    # Scoped to its own id so several can share a page.
    svg_id = root.get("id")
    assert svg_id and f"#{svg_id} g.f" in svg and f'"id": "{svg_id}"' in svg


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: the script's syntax is not checked")
def test_script_is_valid_javascript(tmp_path: Path) -> None:
    root = ET.fromstring(flamegraph_svg(build_flame(samples_run(tmp_path, BASIC)), title="t"))
    script = root.find("s:script", NS)
    assert script is not None and script.text
    path = tmp_path / "fg.js"
    path.write_text(script.text)
    proc = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# --- the command --------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["flamegraph", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_command_writes_into_the_run_and_prints_the_path(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = samples_run(tmp_path, BASIC)
    code, out, err = run_cli(capsys, str(run.path))
    assert code == 0, err
    assert out == f"{run.path / 'flamegraph.svg'}\n"
    assert len(frames((run.path / "flamegraph.svg").read_text())) > 5
    code, out, _ = run_cli(capsys, str(run.path), "--wall", "--pid", "11,12", "--category", "thread_pool")
    assert code == 0 and out.strip().endswith("flamegraph-wall-pid11_12-thread_pool.svg")
    target = tmp_path / "x.txt"
    code, out, _ = run_cli(capsys, str(run.path), "--format", "collapsed", "-o", str(target))
    assert code == 0 and out == f"{target}\n"
    assert f"{HOP} 20\n" in target.read_text()
    code, out, _ = run_cli(capsys, str(run.path), "--format", "speedscope")
    doc = json.loads(Path(out.strip()).read_text())
    assert out.strip().endswith("flamegraph.speedscope.json") and doc["profiles"][0]["unit"] == "milliseconds"


def test_command_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = samples_run(tmp_path / "a", BASIC)
    b = samples_run(tmp_path / "b", [line(VIEW, 80), line(SYNC, 120)], requests=40)
    code, out, err = run_cli(capsys, str(a.path), "--diff", str(b.path))
    assert code == 0, err
    path = Path(out.strip())
    assert path.parent == a.path and path.name == f"flamegraph-vs-{b.run_id}.svg"
    assert any("more" in f.classes for f in frames(path.read_text()))


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--pid", "99"], 2, "no samples from pid 99"),
    (["--pid", "x"], 2, "--pid takes process ids"),
    (["--category", "nope"], 2, "unknown category 'nope'"),
    (["--diff", "OTHER", "--format", "collapsed"], 2, "--diff draws an SVG"),
    (["--diff", "OTHER", "--pid", "11"], 2, "--pid cannot be used with --diff"),
    (["--diff", "missing-run"], 2, "no run 'missing-run'"),
    (["-o", "/nonexistent-dir/x.svg"], 1, "cannot write /nonexistent-dir/x.svg"),
])
def test_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     args: list[str], code: int, message: str) -> None:
    run = samples_run(tmp_path / "r", BASIC)
    other = samples_run(tmp_path / "o", BASIC)
    args = [str(other.path) if a == "OTHER" else a for a in args]
    got, out, err = run_cli(capsys, str(run.path), *args)
    assert got == code and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("content", ["", "not collapsed stacks\n"])
def test_command_bad_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str) -> None:
    run = samples_run(tmp_path, [content])
    got, _, err = run_cli(capsys, str(run.path))
    assert got != 0 and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_open_uses_the_browser_or_says_why_not(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = samples_run(tmp_path, BASIC)
    opened: list[str] = []

    def fake_open(url: str) -> bool:
        opened.append(url)
        return True

    monkeypatch.setattr(fg.webbrowser, "open", fake_open)
    code, _, err = run_cli(capsys, str(run.path), "--open")
    assert code == 0 and opened == [(run.path / "flamegraph.svg").resolve().as_uri()]
    assert "opened" in err
    monkeypatch.setattr(fg.shutil, "which", lambda name: None)
    code, out, err = run_cli(capsys, str(run.path), "--format", "speedscope", "--open")
    assert code == 0 and "npx not found" in err and len(err.strip().splitlines()) == 1
    started: list[list[str]] = []
    monkeypatch.setattr(fg.shutil, "which", lambda name: "/usr/bin/npx")
    monkeypatch.setattr(fg.subprocess, "Popen", lambda argv, **kw: started.append(argv))  # type: ignore[func-returns-value]
    code, out, err = run_cli(capsys, str(run.path), "--format", "speedscope", "--open")
    assert code == 0 and started == [["/usr/bin/npx", "--yes", "speedscope", out.strip()]]
