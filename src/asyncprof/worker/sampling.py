"""Which requests the per-request instruments follow: the sample the load generator chose.

The load generator decides, by trace id, which requests are in the sample (``--sample-traces R``,
see :mod:`asyncprof.loadgen.trace_sampling`) and says so in the W3C ``traceparent`` flags it sends.
In the workers a request outside the sample takes the short way: no server or database span (the
OTel middleware is skipped), no accounting record, and its event-loop tasks are not timed.  Where
the database instrumentations can be switched off (one request at a time) or gated
(:func:`in_traced_request`, ASGI), the request runs with no OTel context at all and the workers'
sampler (:func:`request_sampler`) drops any other root span; elsewhere its context suppresses
instrumentation and carries the remote, unsampled parent (:func:`unsampled_context`).  So the
instruments' cost scales with the sample, not with the load.

A request without a well-formed ``traceparent`` (a browser, a health check, a load generator that is
not asyncprof's) is in the sample: nothing says otherwise.
"""

from __future__ import annotations

from typing import Any

__all__ = ["in_traced_request", "request_sampler", "sampled", "unsampled_context"]

_TRACEPARENT_LEN = 55  # "00-" + 32 hex + "-" + 16 hex + "-" + 2 hex


def sampled(traceparent: str | bytes | None) -> bool:
    """False only for a well-formed version-00 ``traceparent`` whose sampled flag (bit 0) is clear."""
    if traceparent is None or len(traceparent) != _TRACEPARENT_LEN:
        return True
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode("latin-1")
    if not traceparent.startswith("00-"):
        return True
    try:
        return bool(int(traceparent[53:55], 16) & 1)
    except ValueError:
        return True


def unsampled_context(traceparent: str | bytes | None) -> Any:
    """An OTel context for a request outside the sample: instrumentation suppressed, and the
    request's remote parent, not sampled, as the current span.

    The OTel instrumentations (the database drivers', and any the user's app has) check the
    suppression flag first and call straight through: an unsampled span still costs the
    sampler's decision and the span machinery, about 100 µs a query.  A span started anyway
    (by code that ignores the flag) has the unsampled parent, so the parent-based sampler drops it.
    Every request outside the sample pays for this, so it is one dict and one object: the
    suppressed base context and the span's key are found once, and the parent's ids are parsed
    only if something asks for them (see :func:`_unsampled_parent_class`).
    """
    global _otel
    if _otel is None:
        from opentelemetry import context, trace
        from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
        from opentelemetry.context.context import Context

        # The span's key in a context, through the public API (OTel makes it unique per process).
        (span_key,) = trace.set_span_in_context(trace.INVALID_SPAN, Context()).keys()
        base = dict(context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, Context()))
        _otel = (base, span_key, Context, _unsampled_parent_class())
    base, span_key, context_class, parent_class = _otel
    return context_class({**base, span_key: parent_class(traceparent)})


def _unsampled_parent_class() -> type:
    """A NonRecordingSpan standing for a request's remote, unsampled parent, built from its
    ``traceparent`` the first time its span context is asked for (most requests never ask)."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    not_sampled = TraceFlags(TraceFlags.DEFAULT)

    class UnsampledParent(NonRecordingSpan):
        def __init__(self, traceparent: str | bytes | None) -> None:
            self._traceparent = traceparent
            self._parsed: Any = None

        def get_span_context(self) -> Any:
            if self._parsed is None:
                traceparent = self._traceparent
                if isinstance(traceparent, bytes):
                    traceparent = traceparent.decode("latin-1")
                try:
                    if traceparent is None:
                        raise ValueError("no traceparent")
                    trace_id, span_id = int(traceparent[3:35], 16), int(traceparent[36:52], 16)
                except ValueError:
                    trace_id = span_id = 0
                self._parsed = SpanContext(trace_id, span_id, is_remote=True, trace_flags=not_sampled)
            return self._parsed

        def __repr__(self) -> str:
            return f"NonRecordingSpan({self.get_span_context()!r})"

    return UnsampledParent


_otel: tuple[Any, ...] | None = None


def in_traced_request() -> bool:
    """Whether the calling code runs inside a request whose server span is recording (in the sample).

    The gate of the database instrumentations in workers that attach no context to requests
    outside the sample (see :func:`request_sampler`).
    """
    global _current_span
    if _current_span is None:
        from opentelemetry.trace import get_current_span

        _current_span = get_current_span
    return _current_span().is_recording()


_current_span: Any = None


def request_sampler(ratio: float) -> Any:
    """The workers' OTel sampler: a span with a parent follows its parent's sampled flag; a root
    span is sampled only if it is a server span (a request without a ``traceparent``), by trace id
    at *ratio*.

    Requests outside the sample run with no OTel context at all where that is cheaper than
    suppressing the instrumentations (ASGI workers, and WSGI workers that serve one request at a
    time): the database instrumentations there are gated by :func:`in_traced_request`, and a span
    any other instrumentation starts inside such a request is a root that is not a server span,
    dropped here rather than sampled into a stray trace of its own.
    """
    from opentelemetry.sdk.trace.sampling import (Decision, ParentBased, Sampler, SamplingResult,
                                                  TraceIdRatioBased)
    from opentelemetry.trace import SpanKind

    class ServerRoots(Sampler):
        def __init__(self, ratio: float) -> None:
            self._ratio = TraceIdRatioBased(ratio)

        def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                          attributes: Any = None, links: Any = None, trace_state: Any = None) -> Any:
            if kind is SpanKind.SERVER:
                return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
            return SamplingResult(Decision.DROP, None, trace_state)

        def get_description(self) -> str:
            return f"ServerRoots{{{self._ratio.get_description()}}}"

    return ParentBased(root=ServerRoots(ratio))
