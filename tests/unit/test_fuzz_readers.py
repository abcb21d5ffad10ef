"""Fuzzing the readers of run files: damaged input is skipped and counted, or an AsyncprofError.

Every reader of a run directory's files (the manifest, ``requests.tsv``, ``spans/*.jsonl``,
``pyspy/samples.txt``, ``accounting/<pid>.tsv`` and ``.json``, ``workers/<pid>.json``) is fed
arbitrary bytes, truncated valid content and valid lines with corrupted fields.  The property:
it returns (skipping what it cannot parse) or raises asyncprof's own error, never anything else.
"""

import json
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncprof.analysis.cpu_profile import cpu_profile
from asyncprof.analysis.flame import build_flame
from asyncprof.analysis.records import read_records, read_worker_summaries
from asyncprof.analysis.requests import parse_request_line, read_request_log
from asyncprof.analysis.spans import index_spans
from asyncprof.analysis.stacks import count_samples, parse_line
from asyncprof.analysis.traces import TraceSource
from asyncprof.errors import AsyncprofError, CorruptRunError
from asyncprof.run import MANIFEST, Run
from asyncprof.worker.record_format import ACCOUNTING_DIR, COLUMNS

from .synthetic import Req, make_run, trace, write_records, write_requests, write_summary

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- valid base content -----------------------------------------------------------------------------

_REQUESTS = [Req(trace(i), 10.0 + i, start=1001.0 + i / 10, us={"wall_us": 1000 + i, "cpu_us": 100})
             for i in range(8)]
_STACKS = (
    'process 101:"gunicorn";thread (0x7f01): MainThread;run (app.py:1);view (django/core/handlers/base.py:9) 7\n'
    'process 102:"gunicorn";thread (12): MainThread;select (selectors.py:468) 3\n'
    "f (a.py:1);g (b.py:2) 1\n"
)


def _span_line(pid: int = 101, trace_id: str = trace(1)) -> bytes:
    request = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "process.pid", "value": {"intValue": pid}},
                                    {"key": "service.name", "value": {"stringValue": "asyncprof-target"}}]},
        "scopeSpans": [{"scope": {"name": "t"}, "spans": [
            {"traceId": trace_id, "spanId": "00f067aa0ba902b7", "parentSpanId": "", "name": "GET /items/",
             "kind": 2, "startTimeUnixNano": "1", "endTimeUnixNano": "2",
             "attributes": [{"key": "http.target", "value": {"stringValue": "/items/"}}]}]}],
    }]}
    return json.dumps(request).encode() + b"\n"


def _base_files() -> dict[str, bytes]:
    """Valid content of each file kind, built with the synthetic run helpers."""
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp))
        write_requests(run, _REQUESTS)
        write_records(run, 101, _REQUESTS)
        write_summary(run, 101, requests=8, hop_sites={"a.py:1": 3}, loop_thread_cpu_s=0.5)
        return {
            "manifest": (run.path / MANIFEST).read_bytes(),
            "requests": run.requests_path.read_bytes(),
            "records": (run.path / ACCOUNTING_DIR / "101.tsv").read_bytes(),
            "summary": (run.path / ACCOUNTING_DIR / "101.json").read_bytes(),
            "spans": _span_line() + _span_line(102, trace(2)),
            "stacks": _STACKS.encode(),
            "worker": json.dumps({"pid": 101, "http": "h11", "loop": "asyncio", "spans": {"ended": 1}}).encode(),
        }


BASE = _base_files()

# --- strategies ------------------------------------------------------------------------------------

#: Field values that break parsers: wrong types, NaN and infinities, huge and negative numbers,
#: non-UTF-8 bytes, separators inside a field.
_BAD_TEXT = st.sampled_from([
    b"", b"nan", b"NaN", b"inf", b"-inf", b"-1", b"-99999.5", b"1e999", b"9" * 5000, b"18446744073709551616",
    b"\xff\xfe", b"\x00", b"\t", b";", b" ", b"\"x\"", b"[]", b"{}", b"null", b"true", b"\xe2\x82", b"0x10",
    "\u0661\u0662".encode(),
])
_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                          st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
_JSON_VALUES = st.recursive(_JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)


@st.composite
def truncated(draw: st.DrawFn, kind: str) -> bytes:
    """The valid content of *kind* cut at a random offset."""
    data = BASE[kind]
    return data[: draw(st.integers(0, len(data)))]


@st.composite
def corrupted_lines(draw: st.DrawFn, kind: str, sep: bytes) -> bytes:
    """The valid content of *kind* with some lines' *sep*-separated fields replaced, dropped or duplicated."""
    lines = BASE[kind].split(b"\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        fields = lines[i].split(sep)
        j = draw(st.integers(0, len(fields) - 1))
        action = draw(st.sampled_from(["replace", "drop", "duplicate", "cut"]))
        if action == "replace":
            fields[j] = draw(st.one_of(_BAD_TEXT, st.binary(max_size=6)))
        elif action == "drop":
            del fields[j]
        elif action == "duplicate":
            fields.insert(j, fields[j])
        else:
            fields[j] = fields[j][: draw(st.integers(0, len(fields[j])))]
        lines[i] = sep.join(fields)
    return b"\n".join(lines)


@st.composite
def mutated_json(draw: st.DrawFn, kind: str) -> bytes:
    """A valid JSON document (or each JSON line) of *kind* with values swapped for values of other types."""
    out = []
    docs = [BASE[kind]] if kind == "manifest" else BASE[kind].splitlines()
    for line in docs:
        doc = json.loads(line)
        for _ in range(draw(st.integers(1, 4))):
            doc = _mutate(draw, doc)
        out.append(json.dumps(doc).encode())
    return b"\n".join(out) + b"\n"


def _mutate(draw: st.DrawFn, doc: Any) -> Any:
    """*doc* with one value somewhere (chosen by *draw*) replaced by an arbitrary JSON value."""
    paths = list(_paths(doc, ()))
    path = draw(st.sampled_from(paths))
    new = draw(_JSON_VALUES)
    if not path:
        return new
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new
    return doc


def _paths(doc: Any, prefix: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def damaged(kind: str, sep: bytes | None = None, json_doc: bool = False) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, truncated valid content, and (per format) corrupted fields of *kind*."""
    options = [st.binary(max_size=300), truncated(kind)]
    if sep is not None:
        options.append(corrupted_lines(kind, sep))
    if json_doc:
        options.append(mutated_json(kind))
    return st.one_of(*options)


def _returns_or_own_error(call: Callable[[], Any]) -> Any:
    """Call *call*; an AsyncprofError is an accepted outcome, any other exception fails the test."""
    try:
        return call()
    except AsyncprofError as exc:
        assert str(exc)
        return None


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One synthetic run directory per module, its files overwritten by each example."""
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def _fresh_run(parent: Path) -> Run:
    run = make_run(parent)
    for sub in ("spans", "pyspy", "workers", ACCOUNTING_DIR):
        (run.path / sub).mkdir(exist_ok=True)
    return run


# --- the manifest ------------------------------------------------------------------------------------


@FUZZ
@given(data=damaged("manifest", json_doc=True))
def test_manifest_loads_or_is_corrupt(scratch: Path, data: bytes) -> None:
    path = scratch / "manifest-fuzz"
    path.mkdir(exist_ok=True)
    (path / MANIFEST).write_bytes(data)
    run = _returns_or_own_error(lambda: Run.load(path))
    if run is not None:
        assert isinstance(run.manifest, dict)
        assert isinstance(run.run_id, str)


# --- requests.tsv ----------------------------------------------------------------------------------------


@FUZZ
@given(data=damaged("requests", sep=b"\t"))
def test_request_log_skips_and_counts(scratch: Path, data: bytes) -> None:
    path = scratch / "requests.tsv"
    path.write_bytes(data)
    log = read_request_log(path)
    lines = [raw for raw in data.split(b"\n") if raw and not raw.startswith(b"start\t")]
    assert len(log) + log.skipped <= len(lines) + 1
    assert all(isinstance(v, float) for v in log.start + log.latency_ms)
    assert all(isinstance(v, str) for v in log.name + log.trace_id + log.error)
    log.window(1000.0, 1010.0)


@FUZZ
@given(line=st.binary(max_size=200))
def test_request_line_parses_or_is_none(line: bytes) -> None:
    req = parse_request_line(line)
    if req is not None:
        assert math.isfinite(req.start) and math.isfinite(req.latency_ms) and req.latency_ms >= 0


@pytest.mark.parametrize("field,value", [(0, b"nan"), (0, b"inf"), (3, b"NaN"), (3, b"-5.0"), (3, b"-inf"),
                                         (2, b"9" * 5000), (1, b"\xff\xfe"), (5, b"\xe2\x82")])
def test_request_line_with_a_corrupted_field_is_skipped(scratch: Path, field: int, value: bytes) -> None:
    good = BASE["requests"].split(b"\n")[1]
    fields = good.split(b"\t")
    fields[field] = value
    path = scratch / "requests-one.tsv"
    path.write_bytes(b"\n".join([good, b"\t".join(fields), good, b"torn\t1"]) + b"\n")
    log = read_request_log(path)
    assert (len(log), log.skipped) == (2, 2)


def test_unreadable_request_log_is_a_corrupt_run(scratch: Path) -> None:
    path = scratch / "requests-dir.tsv"
    path.mkdir(exist_ok=True)
    with pytest.raises(CorruptRunError, match="cannot read"):
        read_request_log(path)


# --- spans/*.jsonl -----------------------------------------------------------------------------------------


@FUZZ
@given(data=damaged("spans", json_doc=True))
def test_spans_skip_damaged_lines(scratch: Path, data: bytes) -> None:
    spans_dir = scratch / "spans"
    spans_dir.mkdir(exist_ok=True)
    (spans_dir / "101.jsonl").write_bytes(data)
    index = index_spans(spans_dir)
    assert index.spans == sum(index.by_pid.values())
    assert all(isinstance(t, str) for t in index.server_trace_ids)
    assert index.skipped_lines <= sum(1 for line in data.split(b"\n") if line.strip())


def test_damaged_span_lines_are_counted(scratch: Path) -> None:
    spans_dir = scratch / "spans-counted"
    spans_dir.mkdir(exist_ok=True)
    bad = [b"{", b"null", b'{"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [null]}]}]}',
           b'{"resourceSpans": 3}', b"\xff\xfe"]
    (spans_dir / "101.jsonl").write_bytes(BASE["spans"] + b"\n".join(bad) + b"\n")
    index = index_spans(spans_dir)
    assert (index.spans, index.skipped_lines) == (2, len(bad))
    assert index.by_pid == {101: 1, 102: 1}


@FUZZ
@given(data=damaged("spans", json_doc=True), requests=damaged("requests", sep=b"\t"))
def test_trace_export_source_skips_damaged_lines(scratch: Path, data: bytes, requests: bytes) -> None:
    """``asyncprof export`` reads the same span files and request log: check() or skip, never crash."""
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        run = _fresh_run(Path(tmp))
        (run.spans_dir / "101.jsonl").write_bytes(data)
        run.requests_path.write_bytes(requests)
        source = TraceSource(run)
        if _returns_or_own_error(lambda: (source.check(), True)) is None:
            return
        for _resource, _scope, spans in source.batches():
            assert all(isinstance(s, dict) for s in spans)


# --- pyspy/samples.txt ----------------------------------------------------------------------------------


@FUZZ
@given(data=damaged("stacks", sep=b";"))
def test_collapsed_stacks_skip_damaged_lines(scratch: Path, data: bytes) -> None:
    path = scratch / "samples.txt"
    path.write_bytes(data)
    counts = count_samples(path)
    assert counts.samples >= counts.idle >= 0
    universal = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")  # the text-mode line ends
    assert counts.skipped_lines <= sum(1 for line in universal.split(b"\n") if line.strip())
    profile = cpu_profile(path)
    assert profile.on_cpu_samples + profile.idle_samples == profile.samples
    assert profile.skipped_lines == counts.skipped_lines


def test_damaged_stack_lines_are_counted(scratch: Path) -> None:
    path = scratch / "samples-counted.txt"
    path.write_bytes(BASE["stacks"] + b"f (a.py:1) -3\nno count at all\nf (a.py:1) " + b"9" * 5000 + b"\n\n")
    counts = count_samples(path)
    assert (counts.samples, counts.skipped_lines, counts.unreadable) == (11, 3, None)
    directory = scratch / "samples-dir.txt"
    directory.mkdir(exist_ok=True)
    assert count_samples(directory).unreadable
    assert cpu_profile(directory).unreadable


@FUZZ
@given(line=st.text(max_size=120))
def test_stack_line_parses_or_is_none(line: str) -> None:
    stack = parse_line(line)
    assert stack is None or stack.count >= 0


@FUZZ
@given(data=damaged("stacks", sep=b";"))
def test_flame_builds_or_says_why(scratch: Path, data: bytes) -> None:
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        run = _fresh_run(Path(tmp))
        (run.pyspy_dir / "samples.txt").write_bytes(data)
        _returns_or_own_error(lambda: build_flame(run))
        _returns_or_own_error(lambda: build_flame(run, wall=True))


# --- accounting/<pid>.tsv and .json ------------------------------------------------------------------------


def test_records_with_oversized_numbers_are_skipped(scratch: Path) -> None:
    """A number beyond int()'s 4300-digit limit (or 64 bits) is a damaged line, not a ValueError."""
    directory = scratch / "accounting-huge"
    directory.mkdir(exist_ok=True)
    lines = BASE["records"].split(b"\n")
    lines[1] = lines[1].replace(b"\t1000\t", b"\t" + b"9" * 5000 + b"\t", 1)
    lines[2] = lines[2].replace(b"\t1001\t", b"\t" + b"9" * 25 + b"\t", 1)
    (directory / "101.tsv").write_bytes(b"\n".join(lines))
    joined = read_records(directory, [r.trace_id for r in _REQUESTS], [r.name for r in _REQUESTS])
    assert (joined.matched, joined.skipped_lines) == (len(_REQUESTS) - 2, 2)


@FUZZ
@given(data=damaged("records", sep=b"\t"))
def test_records_skip_and_count(scratch: Path, data: bytes) -> None:
    directory = scratch / "accounting-records"
    directory.mkdir(exist_ok=True)
    (directory / "101.tsv").write_bytes(data)
    ids = [r.trace_id for r in _REQUESTS]
    joined = read_records(directory, ids, [r.name for r in _REQUESTS])
    assert 0 <= joined.matched <= joined.records
    assert joined.skipped_lines >= 0
    for group in joined.groups.values():
        assert all(len(col) == len(group) for col in group.columns.values())


@FUZZ
@given(data=damaged("summary", json_doc=True))
def test_worker_summaries_warn(scratch: Path, data: bytes) -> None:
    directory = scratch / "accounting-summaries"
    directory.mkdir(exist_ok=True)
    (directory / "101.json").write_bytes(data)
    summaries = read_worker_summaries(directory)
    summaries.to_json()
    assert summaries.requests >= 0


# --- workers/<pid>.json ---------------------------------------------------------------------------------------


@FUZZ
@given(data=damaged("worker", json_doc=True))
def test_worker_infos_skip_unreadable(scratch: Path, data: bytes) -> None:
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        run = _fresh_run(Path(tmp))
        (run.workers_dir / "101.json").write_bytes(data)
        assert all(isinstance(info, dict) for info in run.worker_infos())


def test_column_names_cover_the_record_base() -> None:
    """The records base content is in today's format (else the corrupted-field cases test little)."""
    assert BASE["records"].split(b"\n")[0].decode().split("\t") == list(COLUMNS)


@FUZZ
@given(data=damaged("spans", json_doc=True), fmt=st.sampled_from(["jaeger", "otlp"]))
def test_export_of_damaged_spans_writes_or_says_why(scratch: Path, data: bytes, fmt: str) -> None:
    """The whole ``asyncprof export`` path over damaged span files: a file, or asyncprof's error."""
    from asyncprof.exporters.run_export import export_run

    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        run = _fresh_run(Path(tmp))
        run.update(instruments={"otel": {"enabled": True}})
        (run.spans_dir / "101.jsonl").write_bytes(data)
        run.requests_path.write_bytes(BASE["requests"])
        _returns_or_own_error(lambda: export_run(run, fmt, output=Path(tmp) / "out"))
