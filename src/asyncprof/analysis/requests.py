"""Read the client-side request log into columns, and cut out the measured window."""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RequestLog:
    """Columns of ``requests.tsv``; ``skipped`` counts lines that could not be parsed.

    ``lag_ms`` is the open-loop schedule lag (how long after its scheduled ``start`` the request
    was really sent; its ``latency_ms`` already includes it), None in closed loop.
    """

    start: list[float] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    trace_id: list[str] = field(default_factory=list)
    error: list[str] = field(default_factory=list)
    lag_ms: list[float | None] = field(default_factory=list)
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
        for col in ("start", "name", "status", "latency_ms", "nbytes", "trace_id", "error", "lag_ms"):
            src = getattr(self, col)
            setattr(out, col, [src[i] for i in keep])
        return out


def read_request_log(path: Path) -> RequestLog:
    """Parse *path*; a missing file gives an empty log, damaged lines are counted and skipped."""
    log = RequestLog()
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return log
    with f:
        for raw in f:
            fields = raw.rstrip(b"\n").split(b"\t")
            if fields[0] == b"start":
                continue
            if len(fields) < 7:
                log.skipped += 1
                continue
            try:
                start, status, latency, nbytes = float(fields[0]), int(fields[2]), float(fields[3]), int(fields[4])
                name, trace_id = fields[1].decode(), fields[5].decode()
                error = fields[6].decode(errors="replace")
                lag = float(fields[7]) if len(fields) > 7 and fields[7] else None
            except (ValueError, UnicodeDecodeError):
                log.skipped += 1
                continue
            log.start.append(start)
            log.name.append(name)
            log.status.append(status)
            log.latency_ms.append(latency)
            log.nbytes.append(nbytes)
            log.trace_id.append(trace_id)
            log.error.append(error)
            log.lag_ms.append(lag)
    return log
