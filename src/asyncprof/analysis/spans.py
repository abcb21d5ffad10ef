"""Read the workers' OTLP/JSON span files."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import orjson

SPAN_KIND_SERVER = 2
#: Read buffer for span files: a line is a whole batch (hundreds of KB), and with the default
#: 8 KiB buffer reading the lines alone costs more CPU than decoding them.
_READ_BUFFER = 1 << 23


@dataclass
class SpanIndex:
    """What the report needs from the spans: counts and the trace ids that reached a server.

    ``skipped_lines`` counts the lines that are not OTLP/JSON span batches (torn, not JSON, or
    with fields of the wrong type); ``unreadable_files`` names span files that could not be opened.
    """

    spans: int = 0
    server_trace_ids: set[str] = field(default_factory=set)
    by_pid: dict[int, int] = field(default_factory=dict)
    skipped_lines: int = 0
    unreadable_files: list[str] = field(default_factory=list)


def parse_span_line(line: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]] | None:
    """The ``(resource attributes, span)`` pairs of one OTLP/JSON line, or None if the line is damaged.

    A line is damaged when it is not JSON, or when a part of the OTLP structure the readers use
    (``resourceSpans``, ``resource.attributes``, ``scopeSpans``, ``spans``, each span) is missing
    or of the wrong type; the whole line is then left out, never half of it.
    """
    try:
        request = orjson.loads(line)
        out: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for rs in request["resourceSpans"]:
            attrs: dict[str, Any] = {}
            for a in rs["resource"]["attributes"]:
                value = a["value"]
                if not isinstance(a["key"], str) or not isinstance(value, dict):
                    return None
                attrs[a["key"]] = next(iter(value.values()))
            for ss in rs["scopeSpans"]:
                spans = ss["spans"]
                if not isinstance(spans, list) or not all(isinstance(span, dict) for span in spans):
                    return None
                out += [(attrs, span) for span in spans]
        return out
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, StopIteration, IndexError):
        return None


def iter_spans(spans_dir: Path, index: SpanIndex | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yield ``(resource attributes, span)`` for every span in every file.

    Skips and counts (in *index*, when given) the lines it cannot parse and the files it cannot
    open; never raises for damaged content.
    """
    for path in sorted(spans_dir.glob("*.jsonl")):
        try:
            f = open(path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115
        except OSError:
            if index is not None:
                index.unreadable_files.append(path.name)
            continue
        with f:
            try:
                for line in f:
                    if not line.strip():
                        continue
                    pairs = parse_span_line(line)
                    if pairs is None:
                        if index is not None:
                            index.skipped_lines += 1
                        continue
                    yield from pairs
            except OSError:  # an I/O error mid-file: what was read counts
                if index is not None:
                    index.unreadable_files.append(path.name)


class _Value(msgspec.Struct):
    stringValue: Any = None  # noqa: N815 - OTLP/JSON's names
    intValue: Any = None  # noqa: N815


class _Attribute(msgspec.Struct):
    key: str
    value: _Value


class _Resource(msgspec.Struct):
    attributes: list[_Attribute]


class _Span(msgspec.Struct):
    traceId: Any = None  # noqa: N815
    kind: Any = None


class _ScopeSpans(msgspec.Struct):
    spans: list[_Span]


class _ResourceSpans(msgspec.Struct):
    resource: _Resource
    scopeSpans: list[_ScopeSpans]  # noqa: N815


class _Batch(msgspec.Struct):
    resourceSpans: list[_ResourceSpans]  # noqa: N815


#: Decodes only what the index needs: msgspec skips every other field without building it, which
#: is what keeps ``report`` fast on millions of spans (orjson would build every attribute).
_BATCH = msgspec.json.Decoder(_Batch)


def _pid(resource: _Resource) -> int:
    for a in resource.attributes:
        if a.key == "process.pid":
            try:
                return int(a.value.intValue if a.value.intValue is not None else a.value.stringValue or 0)
            except (TypeError, ValueError, OverflowError):
                return 0
    return 0


def _read_lines(f: BinaryIO) -> Iterator[memoryview]:
    """The lines of the unbuffered file *f*, without their newline, as views of one reused buffer:
    a view is valid only until the next one is asked for.

    A span file is gigabytes of lines of hundreds of KB; reading into one buffer and decoding in
    place copies each byte once (the file's lines as bytes objects would copy it twice).
    """
    buf = bytearray(_READ_BUFFER)
    view = memoryview(buf)
    start = end = 0
    while True:
        newline = buf.find(b"\n", start, end)
        if newline >= 0:
            yield view[start:newline]
            start = newline + 1
            continue
        if start:  # the partial line to the front (same length: no resize while views exist)
            buf[:end - start] = buf[start:end]
            end, start = end - start, 0
        elif end == len(buf):  # one line fills the buffer: a twice larger one (old views stay valid)
            buf = buf + bytes(len(buf))
            view = memoryview(buf)
        read = f.readinto(view[end:])
        if not read:
            break
        end += read
    if start < end:  # a last line without its newline
        yield view[start:end]


def index_spans(spans_dir: Path) -> SpanIndex:
    """Count spans per worker and collect the trace ids of server spans; damaged lines are counted in
    ``skipped_lines``, unopenable files in ``unreadable_files``.

    A line counts as damaged on the same terms as :func:`parse_span_line` for the parts read here
    (not JSON, or ``resourceSpans``/``resource.attributes``/``scopeSpans``/``spans`` missing or of
    the wrong type); the whole line is then left out.
    """
    index = SpanIndex()
    for path in sorted(spans_dir.glob("*.jsonl")):
        try:
            f = open(path, "rb", buffering=0)  # noqa: SIM115 - _read_lines does the buffering
        except OSError:
            index.unreadable_files.append(path.name)
            continue
        with f:
            try:
                for line in _read_lines(f):
                    try:
                        batch = _BATCH.decode(line)
                    except (msgspec.DecodeError, UnicodeDecodeError):
                        if bytes(line).strip():  # a blank line is not damage (it never decodes)
                            index.skipped_lines += 1
                        continue
                    for rs in batch.resourceSpans:
                        pid = _pid(rs.resource)
                        n = 0
                        for ss in rs.scopeSpans:
                            n += len(ss.spans)
                            for span in ss.spans:
                                if span.kind == SPAN_KIND_SERVER and isinstance(span.traceId, str):
                                    index.server_trace_ids.add(span.traceId)
                        index.spans += n
                        index.by_pid[pid] = index.by_pid.get(pid, 0) + n
            except OSError:  # an I/O error mid-file: what was read counts
                index.unreadable_files.append(path.name)
    return index
