"""The HTML report's SVG charts: axes, gaps in lines, signed stacked bars, escaping."""

import re
import xml.etree.ElementTree as ET

import pytest

from asyncprof.renderers.html_charts import BarRow, Series, fmt, line_chart, log_ticks, nice_ticks, stacked_bars


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # the charts are well-formed XML as well as HTML


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (0, 100, [0, 20, 40, 60, 80, 100]),
    (0, 100.00001, [0, 20, 40, 60, 80, 100]),
    (0, 100.1, [0, 25, 50, 75, 100, 125]),
    (0, 7, [0, 2, 4, 6, 8]),
    (-52.9, 0, [-60, -40, -20, 0]),
    (5, 5, [5, 6, 7, 8, 9, 10]),
])
def test_nice_ticks_cover_the_range(lo: float, hi: float, expected: list[float]) -> None:
    assert nice_ticks(lo, hi) == expected


def test_log_ticks_and_numbers() -> None:
    assert log_ticks(3, 600) == [2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert log_ticks(5, 5) == [5, 10] and log_ticks(1, 10) == [1, 2, 5, 10]
    assert [fmt(v) for v in (0, 0.25, 12.345, 1234.5)] == ["0", "0.25", "12.3", "1,234"]


def test_line_chart_breaks_at_missing_values_and_counts_points() -> None:
    svg = line_chart("p99", [Series("a<b", "#123456", [(0, 1.0), (1, None), (2, 3.0), (3, 4.0)], dots=True),
                             Series("c", "#654321", [(0, 2.0)])], x_label="s", y_label="ms")
    root = parse(svg)
    assert root.get("data-chart") == "p99" and root.get("data-marks") == "4"
    paths = [p.get("d") for p in root.iter("path")]
    assert paths[0] is not None and paths[0].count("M") == 2  # the gap at x=1 starts a new segment
    assert "a&lt;b" in svg and "a<b" not in svg
    assert [g.get("data-key") for g in root.iter("g") if g.get("class") == "legend-item"] == ["s0", "s1"]


def test_log_axis_drops_non_positive_values() -> None:
    root = parse(line_chart("cdf", [Series("r", "#000", [(0.0, 0.1), (5.0, 0.5), (500.0, 1.0)])], x_label="ms",
                            y_label="share", x_log=True, y_max=1.0, step=True))
    assert root.get("data-marks") == "2"


def test_stacked_bars_stack_negatives_left_of_zero() -> None:
    svg = stacked_bars("gap", [("", [BarRow("cpu", {"cpu": 2.0}), BarRow("loop", {"event_loop": -50.0})])],
                       [("cpu", "cpu", "#f00"), ("event_loop", "loop", "#00f")], unit="ms", total_unit="ms")
    root = parse(svg)
    rects = [r for r in root.iter("rect") if r.get("height") == "16"]
    assert len(rects) == 2 and root.get("data-marks") == "2"
    zero = float(next(t for t in root.iter("text") if t.text == "0").get("x") or 0)
    cpu, loop = rects
    assert float(cpu.get("x") or 0) == pytest.approx(zero, abs=0.01)
    assert float(loop.get("x") or 0) + float(loop.get("width") or 0) == pytest.approx(zero, abs=0.02)
    assert re.search(r">-50 ms<", svg)


def test_long_labels_are_cut_with_the_full_label_in_the_tooltip() -> None:
    label = "x" * 80 + "</text><script>"
    svg = stacked_bars("b", [("group <1>", [BarRow(label, {"a": 1.0})])], [("a", "a", "#000")], unit="%")
    root = parse(svg)
    texts = [t for t in root.iter("text") if t.find("title") is not None]
    assert texts[0].text and texts[0].text.endswith("…") and len(texts[0].text) < 40
    assert texts[0].find("title").text == label  # type: ignore[union-attr]
    assert "<script>" not in svg
