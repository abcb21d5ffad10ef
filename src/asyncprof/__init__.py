"""asyncprof: where a Django request's time goes under sync and async workers.

The public API is small: :func:`record` a run, :func:`resolve_run` /
:class:`Run` to load one, :func:`build_report` to analyse it (:func:`summarize`
for the summary alone), and the
:class:`AsyncprofError` tree for failures.
"""

__version__ = "0.1.0"

from asyncprof.analysis.report import build_report  # noqa: E402
from asyncprof.analysis.summary import summarize  # noqa: E402
from asyncprof.config import RecordConfig  # noqa: E402
from asyncprof.errors import AsyncprofError  # noqa: E402
from asyncprof.run import Run, resolve_run  # noqa: E402


def record(config: RecordConfig) -> Run:
    """Record one run (see :func:`asyncprof.recorder.record`)."""
    from asyncprof.recorder import record as _record

    return _record(config)


__all__ = [
    "AsyncprofError", "RecordConfig", "Run", "__version__", "build_report", "record", "resolve_run", "summarize",
]
