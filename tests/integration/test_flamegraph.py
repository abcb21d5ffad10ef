"""asyncprof flamegraph on real short sync and async seed runs: the thread hop is its own colour,
and the differential flamegraph shows per request where the async run spends more."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from asyncprof.analysis.flame import build_flame
from asyncprof.run import Run
from tests.integration.helpers import SHORT, asyncprof

pytestmark = pytest.mark.integration

NS = {"s": "http://www.w3.org/2000/svg"}
HOP_CATEGORY = "thread_pool"  # categories.py: thread start/join, executors, asgiref's sync_to_async


def frame_groups(svg: Path) -> list[ET.Element]:
    root = ET.fromstring(svg.read_text())
    return [g for g in root.iterfind(".//s:g[@class]", NS) if "f" in g.get("class", "").split()]


def width(g: ET.Element) -> float:
    rect = g.find("s:rect", NS)
    assert rect is not None
    return float(rect.get("width", "0"))


def name(g: ET.Element) -> str:
    title = g.find("s:title", NS)
    return (title.text or "").split("\n")[0] if title is not None else ""


def test_flamegraph_of_sync_and_async_seed_runs(traces: Path, service_url: str) -> None:
    runs: dict[str, Path] = {}
    for mode in ("sync", "async"):
        proc = asyncprof("record", "--mode", mode, "--db", service_url, "--out", str(traces), "--no-pyinstrument",
                         *SHORT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[mode] = next(p for p in traces.iterdir() if p.is_dir() and p not in runs.values())

    proc = asyncprof("flamegraph", str(runs["async"]))
    assert proc.returncode == 0, proc.stderr
    svg = Path(proc.stdout.strip())
    assert svg == runs["async"] / "flamegraph.svg"
    groups = frame_groups(svg)
    hop = [g for g in groups if f"c-{HOP_CATEGORY}" in g.get("class", "").split()]
    assert sum(width(g) for g in hop) > 0
    hop_names = {name(g) for g in hop}
    assert any(n.startswith(("SyncToAsync.", "Thread.start", "Thread.join", "ThreadPoolExecutor."))
               or "asgiref/" in n for n in hop_names), sorted(hop_names)[:20]
    legend = ET.fromstring(svg.read_text()).iterfind(".//s:g[@class='lg']", NS)
    assert HOP_CATEGORY in {g.get("data-category") for g in legend}
    # The frames' own category shares are the report's CPU profile's.
    flame = build_flame(Run.load(runs["async"]))
    assert flame.category_samples()[HOP_CATEGORY] > 0

    proc = asyncprof("flamegraph", str(runs["async"]), "--diff", str(runs["sync"]))
    assert proc.returncode == 0, proc.stderr
    diff = Path(proc.stdout.strip())
    assert diff.name == f"flamegraph-vs-{runs['sync'].name}.svg"
    groups = frame_groups(diff)
    red = [g for g in groups if "more" in g.get("class", "").split()]
    assert red and sum(width(g) for g in red) > 0
    assert any("more" in g.get("class", "").split() and f"c-{HOP_CATEGORY}" in g.get("class", "").split()
               for g in groups), "the thread hop costs the async run more per request"
    assert any("less" in g.get("class", "").split() for g in groups)  # the sync worker's own frames

    for fmt, suffix in (("collapsed", ".collapsed.txt"), ("speedscope", ".speedscope.json")):
        proc = asyncprof("flamegraph", str(runs["async"]), "--format", fmt, "--category", HOP_CATEGORY)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().endswith(f"flamegraph-{HOP_CATEGORY}{suffix}")
        assert Path(proc.stdout.strip()).stat().st_size > 0
