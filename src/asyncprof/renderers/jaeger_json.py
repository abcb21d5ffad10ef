"""A run's traces in Jaeger's JSON trace format, for the Jaeger UI's "Upload JSON" (no collector needed).

The format is what Jaeger's query API returns and what the UI's JSON loader reads without a backend
(an OTLP file would need one: the UI sends it to the query service to convert)::

    {"data": [{"traceID": "<32 hex>",
               "spans": [{"traceID", "spanID": "<16 hex>", "operationName",
                          "references": [{"refType": "CHILD_OF", "traceID", "spanID": "<parent>"}],
                          "startTime": <µs since the epoch>, "duration": <µs>, "flags": 1,
                          "tags": [{"key", "type": "string|bool|int64|float64|binary", "value"}],
                          "logs": [], "processID": "p1", "warnings": null}, ...],
               "processes": {"p1": {"serviceName": "...", "tags": [...]}},
               "warnings": null}, ...]}

The UI builds each trace's tree from the first reference of every span and finds each span's
service through ``processID`` in the trace's own ``processes`` map.  Span kind, status and
instrumentation scope become the tags Jaeger itself uses for OTLP spans (``span.kind``,
``otel.status_code``, ``error``, ``otel.scope.name``).

Runs can be large and a trace's spans are spread over every worker's file and the request log, so
spans are first partitioned by trace id into temporary files when the run is big (in memory when it
is small), then each partition is grouped and written, one trace at a time.
"""

import base64
import contextlib
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from asyncprof.analysis.traces import (LOADGEN_SERVICE, Parentage, SpanRef, TraceSource, check_trace,
                                       decode_value, span_role)

#: Input bytes (span files + request log) per partition held in memory at once.
PARTITION_BYTES = 32 * 1024 * 1024
SPAN_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def tag(key: str, value: dict[str, Any]) -> dict[str, Any]:
    """A Jaeger tag from an OTLP/JSON ``AnyValue``."""
    if "stringValue" in value:
        return {"key": key, "type": "string", "value": value["stringValue"]}
    if "boolValue" in value:
        return {"key": key, "type": "bool", "value": bool(value["boolValue"])}
    if "intValue" in value:
        return {"key": key, "type": "int64", "value": int(value["intValue"])}
    if "doubleValue" in value:
        return {"key": key, "type": "float64", "value": float(value["doubleValue"])}
    if "bytesValue" in value:
        return {"key": key, "type": "binary", "value": value["bytesValue"]}
    return {"key": key, "type": "string", "value": orjson.dumps(decode_value(value)).decode()}


def tags(attrs: list[dict[str, Any]], skip: str | None = None) -> list[dict[str, Any]]:
    return [tag(a["key"], a.get("value") or {}) for a in attrs if isinstance(a, dict) and a.get("key") != skip]


def jaeger_span(span: dict[str, Any], scope: dict[str, Any], process_id: str) -> dict[str, Any]:
    """One OTLP/JSON span as a Jaeger span."""
    start_ns = int(span.get("startTimeUnixNano") or 0)
    end_ns = int(span.get("endTimeUnixNano") or start_ns)
    out_tags = tags(span.get("attributes") or [])
    if kind := SPAN_KINDS.get(span.get("kind") or 0):
        out_tags.append({"key": "span.kind", "type": "string", "value": kind})
    status = span.get("status") or {}
    if status.get("code") == 2:
        out_tags.append({"key": "otel.status_code", "type": "string", "value": "ERROR"})
        out_tags.append({"key": "error", "type": "bool", "value": True})
        if status.get("message"):
            out_tags.append({"key": "otel.status_description", "type": "string", "value": status["message"]})
    elif status.get("code") == 1:
        out_tags.append({"key": "otel.status_code", "type": "string", "value": "OK"})
    if scope.get("name"):
        out_tags.append({"key": "otel.scope.name", "type": "string", "value": scope["name"]})
    if scope.get("version"):
        out_tags.append({"key": "otel.scope.version", "type": "string", "value": scope["version"]})
    trace_id = _hex_id(span["traceId"], 32)
    parent = span.get("parentSpanId")
    return {
        "traceID": trace_id,
        "spanID": _hex_id(span["spanId"], 16),
        "operationName": span.get("name") or "",
        "references": [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": _hex_id(parent, 16)}] if parent else [],
        "startTime": start_ns // 1000,
        "duration": max(0, end_ns - start_ns) // 1000,
        "flags": 1,
        "tags": out_tags,
        "logs": [],
        "processID": process_id,
        "warnings": None,
    }


def _hex_id(value: str, digits: int) -> str:
    """Ids as lowercase hex; an id in protobuf's base64 JSON mapping (some exporters write that) converted."""
    v = value.lower()
    if len(v) == digits and all(c in "0123456789abcdef" for c in v):
        return v
    with contextlib.suppress(ValueError):
        raw = base64.b64decode(value, validate=True)
        if len(raw) * 2 == digits:
            return raw.hex()
    return v


@dataclass
class JaegerExport:
    """What :func:`write_jaeger` wrote."""

    traces: int = 0
    spans: int = 0
    partitions: int = 1
    parentage: Parentage = field(default_factory=Parentage)


class _Processes:
    """One Jaeger process per distinct resource (the load generator, each worker)."""

    def __init__(self) -> None:
        self.ids: dict[bytes, str] = {}
        self.processes: dict[str, dict[str, Any]] = {}
        self.loadgen: set[str] = set()

    def id_for(self, resource: list[dict[str, Any]]) -> str:
        key = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
        pid = self.ids.get(key)
        if pid is None:
            pid = self.ids[key] = f"p{len(self.ids) + 1}"
            service = next((decode_value(a.get("value") or {}) for a in resource if a.get("key") == "service.name"),
                           None) or "unknown_service"
            self.processes[pid] = {"serviceName": str(service), "tags": tags(resource, skip="service.name")}
            if service == LOADGEN_SERVICE:
                self.loadgen.add(pid)
        return pid


def _input_bytes(source: TraceSource) -> int:
    total = 0
    for path in [*source.span_files(), source.run.requests_path]:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def write_jaeger(source: TraceSource, out: IO[bytes], *, partition_bytes: int = PARTITION_BYTES,
                 tmp_dir: Path | None = None) -> JaegerExport:
    """Write *source*'s traces to *out* as Jaeger JSON; return counts and the parentage check."""
    processes = _Processes()
    result = JaegerExport(partitions=max(1, -(-_input_bytes(source) // partition_bytes)))
    # Each record: (role, parent id, jaeger span).  Role and parent feed the parentage check.
    Record = tuple[str, str | None, dict[str, Any]]

    def records() -> Iterator[tuple[str, Record]]:
        for resource, scope, spans in source.batches():
            pid = processes.id_for(resource)
            loadgen = pid in processes.loadgen
            for span in spans:
                js = jaeger_span(span, scope, pid)
                parent = js["references"][0]["spanID"] if js["references"] else None
                yield js["traceID"], (span_role(span, loadgen), parent, js)

    out.write(b'{"data":[')
    first = True

    def write_partition(groups: dict[str, list[Record]]) -> None:
        nonlocal first
        ordered = sorted(groups.items(), key=lambda item: min(r[2]["startTime"] for r in item[1]))
        for trace_id, recs in ordered:
            recs.sort(key=lambda r: r[2]["startTime"])
            used = {r[2]["processID"] for r in recs}
            trace = {"traceID": trace_id, "spans": [r[2] for r in recs],
                     "processes": {p: processes.processes[p] for p in sorted(used)}, "warnings": None}
            out.write((b"" if first else b",") + b"\n" + orjson.dumps(trace))
            first = False
            result.traces += 1
            result.spans += len(recs)
            result.parentage.add(check_trace(SpanRef(r[2]["spanID"], r[1], r[0]) for r in recs))

    if result.partitions == 1:
        groups: dict[str, list[Record]] = defaultdict(list)
        for trace_id, rec in records():
            groups[trace_id].append(rec)
        write_partition(groups)
    else:
        with tempfile.TemporaryDirectory(prefix="asyncprof-jaeger-", dir=tmp_dir) as tmp:
            parts = [open(Path(tmp) / f"{i}.jsonl", "wb") for i in range(result.partitions)]  # noqa: SIM115
            try:
                for trace_id, rec in records():
                    parts[int(trace_id[:8], 16) % result.partitions].write(orjson.dumps(rec) + b"\n")
            finally:
                for f in parts:
                    f.close()
            for i in range(result.partitions):
                path = Path(tmp) / f"{i}.jsonl"
                groups = defaultdict(list)
                with open(path, "rb") as f:
                    for line in f:
                        role, parent, js = orjson.loads(line)
                        groups[js["traceID"]].append((role, parent, js))
                os.unlink(path)
                write_partition(groups)
    out.write(b"\n]}\n")
    return result
