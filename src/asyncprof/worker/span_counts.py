"""Count the spans a worker ended and the spans its exporters took: drops are never silent.

OpenTelemetry's batch processor drops a span when its queue is full and an exporter can fail a
batch; neither tells the application.  :class:`EndedSpans` sits in the provider beside the batch
processors and counts every sampled span that ended; :class:`CountingExporter` wraps an exporter
and counts what it exported and what failed.  At worker exit :func:`counts` goes into
``workers/<pid>.json`` under ``"spans"``, and the report compares them
(:mod:`asyncprof.analysis.completeness`): ``ended - written - write_failed`` spans were dropped
before the file exporter saw them (queue overflow, or still queued when the worker was killed).

Both run in the measured worker, so they cost one locked increment per span (on_end) and one per
batch (export): the lock because gthread workers end spans on several threads, and a lost
increment would read as a drop.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from time import thread_time_ns
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class EndedSpans(SpanProcessor):
    """A span processor that only counts the sampled spans that ended in this process."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        # the batch processors skip unsampled spans the same way: only these are owed to them
        if span.context is not None and span.context.trace_flags.sampled:
            with self._lock:
                self.count += 1


class CountingExporter(SpanExporter):
    """Wraps *exporter*; counts the spans of the batches it exported and of those that failed."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.exported = 0
        self.failed = 0
        self.cpu_ns = 0  # the exporter thread's CPU inside export(): what writing the spans costs

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        c0 = thread_time_ns()
        try:
            result = self.exporter.export(spans)
        except Exception:  # an exporter that raises loses the batch just the same  # noqa: BLE001
            result = SpanExportResult.FAILURE
        self.cpu_ns += thread_time_ns() - c0
        # export runs on the batch processor's one thread: no lock needed
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def counts(ended: EndedSpans, file: CountingExporter | None, live: CountingExporter | None) -> dict[str, Any]:
    """The ``"spans"`` entry of ``workers/<pid>.json``; read after the provider has shut down.

    ``ended``: sampled spans that ended; ``written``/``write_failed``: spans the run directory's
    file exporter wrote / failed to write; ``otlp_sent``/``otlp_failed``: the same for the live
    OTLP exporter (absent without one); ``write_cpu_s``/``otlp_cpu_s``: the exporter threads' CPU
    spent exporting (encoding and writing or sending the batches).
    """
    out: dict[str, Any] = {"ended": ended.count}
    if file is not None:
        out.update(written=file.exported, write_failed=file.failed, write_cpu_s=round(file.cpu_ns / 1e9, 6))
    if live is not None:
        out.update(otlp_sent=live.exported, otlp_failed=live.failed, otlp_cpu_s=round(live.cpu_ns / 1e9, 6))
    return out
