"""Which traces ``--sample-traces R`` keeps: a rule on the trace id alone, import-free.

The load generator decides when it makes up a request's trace id, and says so in the W3C
``traceparent`` it sends (flags ``01`` kept, ``00`` not); the workers' tracer is parent-based, so
it records a server span (and the database spans under it) exactly for the kept traces.  The rule
is OpenTelemetry's ``TraceIdRatioBased`` one: keep a trace when the low 64 bits of its id are below
``round(R * 2**64)``.  Any side can therefore recompute the decision from the trace id, and a smaller
rate keeps a subset of what a larger one kept (``asyncprof export --sample-traces`` on a sampled run
thins it consistently).
"""

#: The environment variable that carries the rate to every Locust process (local or remote).
SAMPLE_ENV = "ASYNCPROF_SAMPLE_TRACES"
LOW_64_BITS = (1 << 64) - 1


def sample_bound(rate: float) -> int:
    """The threshold for *rate* (0 < rate <= 1): traces whose low 64 id bits are below it are kept."""
    return round(rate * (LOW_64_BITS + 1))


def keeps(trace_id: int | str, bound: int) -> bool:
    """Whether the trace with id *trace_id* (an int, or 32 hex digits) is kept under *bound*."""
    if isinstance(trace_id, str):
        try:
            trace_id = int(trace_id[-16:], 16)
        except ValueError:
            return False
    return (trace_id & LOW_64_BITS) < bound
