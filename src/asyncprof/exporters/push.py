"""Send spans read from a run directory to an OTLP endpoint, with the OTel SDK's own exporters.

The spans (OTLP/JSON dicts, see :mod:`asyncprof.analysis.traces`) become SDK ``ReadableSpan``
objects again, so the exporter the user configured encodes and sends them (OTLP/HTTP protobuf or
gRPC, with the ``OTEL_EXPORTER_OTLP_*`` headers, certificates, compression and timeout).  Used for
the client spans at the end of ``asyncprof record --otlp`` and by ``asyncprof export otlp
--endpoint``.
"""

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from asyncprof.analysis.traces import Batch, attributes_dict
from asyncprof.errors import AsyncprofError
from asyncprof.exporters.otlp_env import probe as _probe

#: Spans per export call (the SDK's batch processor sends 512 at a time by default).
PUSH_BATCH = 512


class ExportFailed(AsyncprofError):
    """The OTLP endpoint did not take the spans."""

    exit_code = 3


@dataclass
class PushResult:
    spans: int = 0
    requests: int = 0


class _LastError(logging.Handler):
    """Keeps the exporter's complaints, to say the telling one in one line instead of logged retries."""

    _OS_ERROR = re.compile(r"\[Errno -?\d+\] [^\"')]+")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage().splitlines()[0])
        except Exception:  # noqa: BLE001 - a log record that cannot be formatted
            pass

    @property
    def message(self) -> str | None:
        """The cause (e.g. ``[Errno 111] Connection refused``) if one was logged, else the last complaint."""
        for text in self.messages:
            if match := self._OS_ERROR.search(text):
                return match.group(0).strip()
        return self.messages[-1] if self.messages else None


def readable_spans(batch: Batch, cache: dict[Any, Any]) -> list[Any]:
    """SDK ``ReadableSpan`` objects for one (resource, scope, spans) batch; *cache* keeps resources."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    resource_attrs, scope, spans = batch
    rkey = tuple((a.get("key"), repr(a.get("value"))) for a in resource_attrs)
    resource = cache.get(rkey)
    if resource is None:
        # Resource(...) as is: Resource.create() would add the SDK's own telemetry.sdk.* attributes.
        resource = cache[rkey] = Resource(attributes_dict(resource_attrs))
    skey = (scope.get("name") or "", scope.get("version"))
    instrumentation = cache.get(skey)
    if instrumentation is None:
        instrumentation = cache[skey] = InstrumentationScope(skey[0], skey[1])
    flags = TraceFlags(TraceFlags.SAMPLED)
    out = []
    for span in spans:
        trace_id, span_id = int(span["traceId"], 16), int(span["spanId"], 16)
        parent = span.get("parentSpanId")
        status = span.get("status") or {}
        code = {1: StatusCode.OK, 2: StatusCode.ERROR}.get(status.get("code") or 0, StatusCode.UNSET)
        out.append(ReadableSpan(
            name=span.get("name") or "",
            context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags),
            parent=SpanContext(trace_id, int(parent, 16), is_remote=True, trace_flags=flags) if parent else None,
            resource=resource,
            attributes=attributes_dict(span.get("attributes") or []),
            kind=SpanKind(max(0, int(span.get("kind") or 1) - 1)),  # OTLP counts UNSPECIFIED as 0
            status=Status(code, status.get("message") if code is StatusCode.ERROR else None),
            start_time=int(span.get("startTimeUnixNano") or 0),
            end_time=int(span.get("endTimeUnixNano") or 0),
            instrumentation_scope=instrumentation,
        ))
    return out


def push(batches: Iterable[Batch], exporter: Any, where: str, url: str | None = None) -> PushResult:
    """Export every span of *batches* through *exporter*; ExportFailed at the first refused request.

    *where* names the endpoint in the error, *url* is probed to say why when the exporter's own
    complaint does not.  The exporter is shut down at the end.
    """
    result = PushResult()
    if (unreachable := _probe(url)) is not None:
        # Nothing listens there: say so now rather than after the exporter's retries (seconds per batch).
        exporter.shutdown()
        raise ExportFailed(f"the OTLP endpoint {where} did not accept spans: {unreachable}",
                           "0 spans were sent; is the collector running?")
    handler = _LastError()
    loggers = [logging.getLogger(name) for name in ("opentelemetry.exporter", "opentelemetry.sdk")]
    saved = [(lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
        lg.setLevel(logging.WARNING)
    cache: dict[Any, Any] = {}
    pending: list[Any] = []

    def send(chunk: list[Any]) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        if exporter.export(chunk) is not SpanExportResult.SUCCESS:
            reason = handler.message
            if reason is None or not reason.startswith("[Errno"):
                reason = _probe(url) or reason or "the export request failed"
            raise ExportFailed(f"the OTLP endpoint {where} did not accept spans: {reason}",
                               f"{result.spans} spans were sent before; is the collector running?")
        result.spans += len(chunk)
        result.requests += 1

    try:
        for batch in batches:
            pending.extend(readable_spans(batch, cache))
            while len(pending) >= PUSH_BATCH:
                send(pending[:PUSH_BATCH])
                del pending[:PUSH_BATCH]
        if pending:
            send(pending)
    finally:
        try:
            exporter.shutdown()
        finally:
            for lg, (propagate, level) in zip(loggers, saved):
                lg.removeHandler(handler)
                lg.propagate = propagate
                lg.setLevel(level)
    return result
