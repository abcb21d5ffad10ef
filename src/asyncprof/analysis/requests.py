"""Read the client-side request log into columns, and cut out the measured window."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple


@dataclass
class RequestLog:
    """Columns of ``requests.tsv``; ``skipped`` counts lines that could not be parsed.

    ``lag_ms`` is the open-loop schedule lag (how long after its scheduled ``start`` the request
    was really sent; its ``latency_ms`` already includes it), None in closed loop.  ``span_id`` is
    the client span's id ('' in logs from before that column), ``sampled`` whether the request's
    trace was sampled (``--sample-traces``; True in older logs, which sampled every trace).
    """

    start: list[float] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    trace_id: list[str] = field(default_factory=list)
    error: list[str] = field(default_factory=list)
    lag_ms: list[float | None] = field(default_factory=list)
    span_id: list[str] = field(default_factory=list)
    sampled: list[bool] = field(default_factory=list)
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.start)

    def is_error(self, i: int) -> bool:
        return self.status[i] == 0 or self.status[i] >= 400 or bool(self.error[i])

    def window(self, begin: float | None, end: float | None) -> "RequestLog":
        """The requests that *started* in ``[begin, end)``; None means unbounded."""
        lo = float("-inf") if begin is None else begin
        hi = float("inf") if end is None else end
        keep = [i for i, s in enumerate(self.start) if lo <= s < hi]
        out = RequestLog(skipped=self.skipped)
        for col in ("start", "name", "status", "latency_ms", "nbytes", "trace_id", "error", "lag_ms", "span_id",
                    "sampled"):
            src = getattr(self, col)
            setattr(out, col, [src[i] for i in keep])
        return out


class LoggedRequest(NamedTuple):
    """One parsed line of ``requests.tsv``."""

    start: float
    name: str
    status: int
    latency_ms: float
    nbytes: int
    trace_id: str
    error: str
    lag_ms: float | None
    span_id: str
    sampled: bool


def parse_request_line(raw: bytes) -> LoggedRequest | None:
    """One line of the log (header excluded), or None if it is damaged.

    Tolerant of every generation of the format: 7 columns (before ``lag_ms``), 8 (before
    ``span_id`` and ``sampled``) and 10.
    """
    fields = raw.rstrip(b"\n").split(b"\t")
    if len(fields) < 7:
        return None
    try:
        lag = float(fields[7]) if len(fields) > 7 and fields[7] else None
        return LoggedRequest(
            float(fields[0]), fields[1].decode(), int(fields[2]), float(fields[3]), int(fields[4]),
            fields[5].decode(), fields[6].decode(errors="replace"), lag,
            fields[8].decode() if len(fields) > 8 else "",
            fields[9] != b"0" if len(fields) > 9 else True,
        )
    except (ValueError, UnicodeDecodeError):
        return None


def iter_request_log(path: Path) -> Iterator[LoggedRequest | None]:
    """Stream *path* line by line (None for each damaged line); a missing file yields nothing."""
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        for raw in f:
            if raw.startswith(b"start\t"):
                continue
            yield parse_request_line(raw)


def read_request_log(path: Path) -> RequestLog:
    """Parse *path*; a missing file gives an empty log, damaged lines are counted and skipped."""
    log = RequestLog()
    for req in iter_request_log(path):
        if req is None:
            log.skipped += 1
            continue
        log.start.append(req.start)
        log.name.append(req.name)
        log.status.append(req.status)
        log.latency_ms.append(req.latency_ms)
        log.nbytes.append(req.nbytes)
        log.trace_id.append(req.trace_id)
        log.error.append(req.error)
        log.lag_ms.append(req.lag_ms)
        log.span_id.append(req.span_id)
        log.sampled.append(req.sampled)
    return log
