"""``asyncprof export jaeger|otlp RUN``: a recorded run's traces to a file or an OTLP endpoint.

Files are written next to their destination under a temporary name and renamed when complete, owner
readable only (like the run directory), so a failed export never leaves half a file behind.  ``-o -``
writes to standard output.
"""

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from asyncprof.analysis.traces import TraceSource
from asyncprof.errors import UsageError
from asyncprof.run import Run

FORMATS = ("jaeger", "otlp")


@dataclass
class ExportSummary:
    """What an export did, in lines for the user (stderr) and numbers for tests."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    spans: int = 0
    traces: int | None = None
    client_requests: int = 0
    complete_traces: int | None = None


@contextlib.contextmanager
def _destination(output: Path) -> Iterator[IO[bytes]]:
    if str(output) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {output}: directory {parent} does not exist", "create it, or choose -o elsewhere")
    if output.is_dir():
        raise UsageError(f"cannot write {output}: it is a directory", "name a file, e.g. -o run.json")
    tmp = parent / f".{output.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}", "choose -o elsewhere") from None
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            yield f
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def export_run(run: Run, fmt: str, *, output: Path | None = None, endpoint: str | None = None,
               rate: float = 1.0) -> ExportSummary:
    """Export *run*'s traces as *fmt* to *output* (a file, or ``-``) or, for ``otlp``, to *endpoint*."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}", f"formats: {', '.join(FORMATS)}")
    if endpoint is not None and fmt != "otlp":
        raise UsageError("--endpoint only applies to otlp", "asyncprof export otlp RUN --endpoint URL")
    if (output is None) == (endpoint is None):
        raise UsageError("say where the traces go: -o FILE" + (" or --endpoint URL" if fmt == "otlp" else ""),
                         f"e.g. asyncprof export {fmt} {run.run_id} -o {run.run_id}.{'json' if fmt == 'jaeger' else 'jsonl'}")
    source = TraceSource(run, rate=rate)
    source.check()
    summary = ExportSummary()
    where = str(output) if output is not None else ""
    if endpoint is not None:
        from asyncprof.exporters.otlp_env import make_exporter, option_target
        from asyncprof.exporters.push import push

        target = option_target(endpoint)
        pushed = push(source.batches(), make_exporter(target), target.describe(), url=target.endpoint)
        summary.spans = pushed.spans
        where = target.describe()
        summary.lines.append(f"sent {pushed.spans} spans in {pushed.requests} OTLP requests to {where}")
    elif fmt == "jaeger":
        from asyncprof.renderers.jaeger_json import write_jaeger

        with _destination(output) as out:  # type: ignore[arg-type]
            result = write_jaeger(source, out, tmp_dir=None if str(output) == "-" else output.parent)  # type: ignore[union-attr]
        summary.spans, summary.traces = result.spans, result.traces
        summary.complete_traces = result.parentage.complete
        summary.lines.append(f"wrote {result.traces} traces ({result.spans} spans) as Jaeger JSON to {where} "
                             f"(Jaeger UI: Search → Upload JSON)")
        p = result.parentage
        if p.client_requests:
            summary.lines.append(f"{p.complete} of {p.client_requests} client requests "
                                 f"({100 * p.complete / p.client_requests:.1f} %) have a whole trace: "
                                 f"client span → server span → database span")
    else:
        from asyncprof.renderers.otlp_json import write_otlp_lines

        with _destination(output) as out:  # type: ignore[arg-type]
            written = write_otlp_lines(source, out)
        summary.spans = written.spans
        summary.lines.append(f"wrote {written.spans} spans in {written.lines} OTLP/JSON lines to {where}")
    summary.client_requests = source.client_requests
    if rate < 1 or source.unsampled_requests:
        summary.lines.append(f"{source.client_requests} client requests kept, {source.unsampled_requests} "
                             f"left out by trace sampling" + (f" (--sample-traces {rate:g})" if rate < 1 else ""))
    for name, n in sorted(source.skipped_lines.items()):
        summary.warnings.append(f"skipped {n} damaged line{'s' if n != 1 else ''} of {name}")
    return summary
