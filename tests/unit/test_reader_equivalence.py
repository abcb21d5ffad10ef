"""The report's fast readers keep and skip exactly what the line-by-line readers do.

``read_request_log`` converts blocks of lines column by column, ``tally_stacks`` sums py-spy's
lines without splitting their frames, and ``index_spans`` decodes span lines in place from one
reused buffer.  Each is compared here with the plain per-line reading of the same bytes (damaged,
truncated, with carriage returns, headers mid-file, lines longer than a block), so a speed-up can
never change a report.
"""

import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncprof.analysis import requests as requests_module
from asyncprof.analysis import spans as spans_module
from asyncprof.analysis.requests import iter_request_log, read_request_log
from asyncprof.analysis.spans import index_spans
from asyncprof.analysis.stacks import LineTally, count_samples, iter_stacks, tally_stacks

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_GOOD_REQUEST = ["1001.5", "async/seed", "200", "12.5", "1208", "a" * 32, "", "", "b" * 16, "1"]
_BAD_FIELDS = ["", "nan", "inf", "-1", "-0", "1e999", "9" * 5000, "\xff", " 5", "1_0", "+3", "\r", "007", "x",
               "start", "404", "HTTPError(500)", "\u0661", "3.5"]


@st.composite
def request_logs(draw: st.DrawFn) -> bytes:
    """Request lines of every format generation (7, 8, 10 fields; and wrong widths), some damaged."""
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        fields = (_GOOD_REQUEST + ["x", "y"])[: draw(st.sampled_from([7, 8, 10, 10, 10, 9, 11, 3]))]
        for _ in range(draw(st.integers(0, 2))):
            fields[draw(st.integers(0, len(fields) - 1))] = draw(st.sampled_from(_BAD_FIELDS))
        lines.append("\t".join(fields))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "start\tname\tstatus")
    end = draw(st.sampled_from(["", "\n", "\r\n"]))
    return ("\n".join(lines) + end).encode("utf-8", "surrogateescape")


@FUZZ
@given(data=request_logs(), block=st.sampled_from([1, 9, 64, 4 << 20]))
def test_request_log_columns_equal_the_line_reader(data: bytes, block: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.tsv"
        path.write_bytes(data)
        expected = list(iter_request_log(path))
        saved, requests_module._BLOCK_BYTES = requests_module._BLOCK_BYTES, block
        try:
            log = read_request_log(path)
        finally:
            requests_module._BLOCK_BYTES = saved
    kept = [r for r in expected if r is not None]
    assert log.skipped == len(expected) - len(kept)
    for i, name in enumerate(("start", "name", "status", "latency_ms", "nbytes", "trace_id", "error", "lag_ms",
                              "span_id", "sampled")):
        # repr: -0.0 and 0.0, True and 1 are different values here
        assert repr(getattr(log, name)) == repr([r[i] for r in kept]), name


_FRAMES = ['process 7:"gunicorn; x"', 'process 8:"w"', "thread (0x7f01): MainThread", "thread (12): T-1",
           "thread (0x): bad", "thread (\u0661): T", "process \u0662:", "f (a.py:1)", "select (selectors.py:3)",
           "", " ", "g (b.py:2)"]


@st.composite
def collapsed_files(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 10))):
        frames = draw(st.lists(st.sampled_from(_FRAMES), max_size=5))
        count = draw(st.sampled_from(["1", "7", "0", "-3", "+2", "x", "", "9" * 5000, "\u0663"]))
        lines.append(";".join(frames) + draw(st.sampled_from([" ", "  ", ""])) + count)
    return "\n".join(lines).encode() + draw(st.sampled_from([b"", b"\n", b"\r\n", b"\r", b"\xff\n"]))


@FUZZ
@given(data=collapsed_files())
def test_stack_tally_equals_the_line_parser(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.txt"
        path.write_bytes(data)
        line_tally = LineTally()
        expected: Counter[tuple[int, tuple[str, ...]]] = Counter()
        pids: set[int] = set()
        for stack in iter_stacks(path, line_tally):
            expected[(stack.pid, stack.frames)] += stack.count
            pids.add(stack.pid)
        tally = tally_stacks(path)
        got: Counter[tuple[int, tuple[str, ...]]] = Counter()
        for stack in tally.stacks():
            got[(stack.pid, stack.frames)] += stack.count
        assert got == expected
        assert tally.skipped_lines == line_tally.skipped_lines
        assert set(count_samples(tally).by_pid) == pids  # pids with only 0-count lines included


def _span_line(trace: str, kind: int, pad: int) -> bytes:
    return (b'{"resourceSpans":[{"resource":{"attributes":[{"key":"process.pid","value":{"intValue":"7"}}]},'
            b'"scopeSpans":[{"spans":[{"traceId":"' + trace.encode() + b'","kind":' + str(kind).encode()
            + b',"name":"' + b"x" * pad + b'"}]}]}]}')


@FUZZ
@given(lines=st.lists(st.one_of(st.builds(_span_line, st.sampled_from(["a" * 32, "b" * 32]), st.sampled_from([1, 2]),
                                          st.integers(0, 300)),
                                st.sampled_from([b"", b"   ", b"{", b"null", b"\xff"])), max_size=8),
       end=st.sampled_from([b"", b"\n", b"\r\n"]), buffer=st.sampled_from([8, 64, 333]))
def test_span_index_does_not_depend_on_the_read_buffer(lines: list[bytes], end: bytes, buffer: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "7.jsonl").write_bytes(b"\n".join(lines) + end)
        whole = index_spans(directory)
        saved, spans_module._READ_BUFFER = spans_module._READ_BUFFER, buffer
        try:
            pieces = index_spans(directory)
        finally:
            spans_module._READ_BUFFER = saved
    assert (pieces.spans, pieces.server_trace_ids, pieces.by_pid, pieces.skipped_lines) == \
        (whole.spans, whole.server_trace_ids, whole.by_pid, whole.skipped_lines)
    good = [line for line in lines if line.startswith(b'{"resourceSpans"')]
    assert whole.spans == len(good)
    assert whole.skipped_lines == sum(1 for line in lines if line.strip() and line not in good)
