"""An OpenTelemetry span exporter that appends OTLP/JSON lines to a file.

Each call to :meth:`OtlpJsonFileExporter.export` writes one line holding one
``ExportTraceServiceRequest`` in the OTLP/JSON encoding (hex trace and span
ids, nanosecond timestamps as strings, camelCase keys), so the file can be
replayed to any OTLP/HTTP JSON endpoint line by line.  It runs in the batch
processor's thread, never on the request path.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


def _value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": str(v)}


def encode_attributes(attrs: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Encode a span/resource attribute mapping as OTLP/JSON ``KeyValue`` list."""
    return [{"key": k, "value": _value(v)} for k, v in (attrs or {}).items()]


def encode_span(span: ReadableSpan) -> dict[str, Any]:
    """Encode one finished span as an OTLP/JSON ``Span`` object."""
    ctx = span.context
    out: dict[str, Any] = {
        "traceId": format(ctx.trace_id, "032x"),
        "spanId": format(ctx.span_id, "016x"),
        "name": span.name,
        "kind": span.kind.value + 1,  # OTLP enum counts UNSPECIFIED as 0
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "attributes": encode_attributes(span.attributes),
        "status": {"code": span.status.status_code.value},
    }
    if span.parent is not None:
        out["parentSpanId"] = format(span.parent.span_id, "016x")
    return out


def encode_request(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """Group *spans* by resource and scope into one ``ExportTraceServiceRequest``."""
    by_resource: dict[Any, dict[Any, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    resources = {}
    for span in spans:
        rkey = id(span.resource)
        resources[rkey] = span.resource
        scope = span.instrumentation_scope
        skey = (scope.name, scope.version) if scope else ("", None)
        by_resource[rkey][skey].append(encode_span(span))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": encode_attributes(resources[rkey].attributes)},
                "scopeSpans": [
                    {"scope": {"name": name, **({"version": ver} if ver else {})}, "spans": encoded}
                    for (name, ver), encoded in scopes.items()
                ],
            }
            for rkey, scopes in by_resource.items()
        ]
    }


class OtlpJsonFileExporter(SpanExporter):
    """Append each exported batch as one OTLP/JSON line to *path*."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - lives as long as the worker
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._file.write(orjson.dumps(encode_request(spans)) + b"\n")
            self._file.flush()
        except OSError:
            return SpanExportResult.FAILURE
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if not self._file.closed:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
