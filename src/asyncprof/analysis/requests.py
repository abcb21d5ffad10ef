"""Read the client-side request log into columns, and cut out the measured window.

:func:`read_request_log` reads ``requests.tsv`` in blocks of lines and converts each block column
by column (one ``split`` for the whole block, then ``float``/``int``/``decode`` mapped over each
column in C), which is what keeps a million requests to about a second.  A block with anything
unusual in it (a damaged line, a header repeated mid-file, a line of another width) is parsed line
by line with :func:`parse_request_line` instead, so what is kept and what is skipped is exactly
the line-by-line reader's.
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import compress, repeat
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from asyncprof.errors import CorruptRunError


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

    def error_flags(self) -> list[bool]:
        """``is_error(i)`` of every request, in one pass (for loops over a million requests)."""
        return [status == 0 or status >= 400 or bool(error) for status, error in zip(self.status, self.error)]

    def window(self, begin: float | None, end: float | None) -> "RequestLog":
        """The requests that *started* in ``[begin, end)``; None means unbounded."""
        lo = float("-inf") if begin is None else begin
        hi = float("inf") if end is None else end
        keep = [lo <= s < hi for s in self.start]
        out = RequestLog(skipped=self.skipped)
        for col in ("start", "name", "status", "latency_ms", "nbytes", "trace_id", "error", "lag_ms", "span_id",
                    "sampled"):
            setattr(out, col, list(compress(getattr(self, col), keep)))
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
    """One line of the log (header excluded), or None if it is damaged (too few fields, a number
    that does not parse, a name or id that is not UTF-8): never raises.

    Tolerant of every generation of the format: 7 columns (before ``lag_ms``), 8 (before
    ``span_id`` and ``sampled``) and 10.
    """
    fields = raw.rstrip(b"\n").split(b"\t")
    if len(fields) < 7:
        return None
    try:
        lag = float(fields[7]) if len(fields) > 7 and fields[7] else None
        start, latency = float(fields[0]), float(fields[3])
        # NaN or infinite times and negative durations are damage, not measurements.
        if not (math.isfinite(start) and math.isfinite(latency) and latency >= 0
                and (lag is None or math.isfinite(lag))):
            return None
        return LoggedRequest(
            start, fields[1].decode(), int(fields[2]), latency, int(fields[4]),
            fields[5].decode(), fields[6].decode(errors="replace"), lag,
            fields[8].decode() if len(fields) > 8 else "",
            fields[9] != b"0" if len(fields) > 9 else True,
        )
    except (ValueError, UnicodeDecodeError):
        return None


def iter_request_log(path: Path) -> Iterator[LoggedRequest | None]:
    """Stream *path* line by line (None for each damaged line); a missing file yields nothing.

    Never raises for damaged content; a file that exists but cannot be read (a directory, no
    permission, an I/O error) is a :class:`CorruptRunError`: the request log is what every
    figure of the report is counted from.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CorruptRunError(f"cannot read {path}: {exc.strerror or exc}", "the run directory is damaged") from None
    with f:
        try:
            for raw in f:
                if raw.startswith(b"start\t"):
                    continue
                yield parse_request_line(raw)
        except OSError as exc:
            raise CorruptRunError(f"cannot read {path}: {exc.strerror or exc}",
                                  "the run directory is damaged") from None


T = TypeVar("T")

#: Bytes read per block: large enough that the per-block work is amortised, small enough that a
#: block's fields as bytes objects (ten per line) stay a few tens of MB.
_BLOCK_BYTES = 4 << 20
#: Field counts of the format's generations (see :func:`parse_request_line`) the column path takes.
_WIDTHS = (7, 8, 10)


def read_request_log(path: Path) -> RequestLog:
    """Parse *path*; a missing file gives an empty log; skips and counts (``skipped``) the lines it
    cannot parse; an unreadable file is a :class:`CorruptRunError`.

    Keeps and skips the same lines, with the same values, as parsing each line with
    :func:`parse_request_line` (header lines, ``start\\t…``, are left out uncounted).
    """
    log = RequestLog()
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return log
    except OSError as exc:
        raise CorruptRunError(f"cannot read {path}: {exc.strerror or exc}", "the run directory is damaged") from None
    with f:
        try:
            tail = b""
            while True:
                chunk = f.read(_BLOCK_BYTES)
                if not chunk:
                    break
                block = tail + chunk
                cut = block.rfind(b"\n")
                if cut < 0:
                    tail = block
                    continue
                tail = block[cut + 1:]
                _append_block(log, block[:cut])
            if tail:  # a last line without its newline
                _append_block(log, tail)
        except OSError as exc:
            raise CorruptRunError(f"cannot read {path}: {exc.strerror or exc}",
                                  "the run directory is damaged") from None
    return log


def _append_block(log: RequestLog, block: bytes) -> None:
    """Append the lines of *block* (without its last newline) to *log*: by columns, or line by line
    if that fails."""
    lines = block.split(b"\n")
    if block.startswith(b"start\t") or b"\nstart\t" in block:  # a header, maybe repeated mid-file
        lines = [line for line in lines if not line.startswith(b"start\t")]
    columns = _columns(lines)
    if columns is not None:
        for name, values in zip(_COLUMN_NAMES, columns, strict=True):
            getattr(log, name).extend(values)
        return
    for raw in lines:
        req = parse_request_line(raw)
        if req is None:
            log.skipped += 1
            continue
        for name, value in zip(_COLUMN_NAMES, req, strict=True):
            getattr(log, name).append(value)


_COLUMN_NAMES = ("start", "name", "status", "latency_ms", "nbytes", "trace_id", "error", "lag_ms", "span_id", "sampled")


def _columns(lines: list[bytes]) -> tuple[list[Any], ...] | None:
    """The columns of *lines* in :data:`_COLUMN_NAMES` order, or None if any line is not a good one.

    Every conversion is the one :func:`parse_request_line` applies to a field, mapped over the
    whole column; the first failure (or a line of another width, or a value the line reader would
    reject) gives up on the block rather than guess which line was at fault.
    """
    n = len(lines)
    if not n:
        return ((),) * len(_COLUMN_NAMES)
    widths = set(map(bytes.count, lines, repeat(b"\t", n)))
    width = widths.pop() + 1
    if widths or width not in _WIDTHS:
        return None
    fields = b"\t".join(lines).split(b"\t")
    try:
        start = list(map(float, fields[0::width]))
        latency = list(map(float, fields[3::width]))
        lags = fields[7::width] if width > 7 else []
        lag = [float(v) if v else None for v in lags] if any(lags) else [None] * n
        names = _convert_few(fields[1::width], bytes.decode)
        status = _convert_few(fields[2::width], int)
        nbytes = _convert_few(fields[4::width], int)  # response sizes repeat too: one int object each
        trace_id = list(map(bytes.decode, fields[5::width]))
        error = _convert_few(fields[6::width], _decode_replace)
        span_id = list(map(bytes.decode, fields[8::width])) if width > 8 else [""] * n
        sampled = list(map(b"0".__ne__, fields[9::width])) if width > 9 else [True] * n
    except (ValueError, UnicodeDecodeError):
        return None
    # NaN or infinite times and negative durations are damage (see parse_request_line).
    if not (all(map(math.isfinite, start)) and all(map(math.isfinite, latency)) and min(latency) >= 0
            and all(math.isfinite(v) for v in lag if v is not None)):
        return None
    return start, names, status, latency, nbytes, trace_id, error, lag, span_id, sampled


def _convert_few(column: list[bytes], convert: Callable[[bytes], T]) -> list[T]:
    """``list(map(convert, column))``, converting each distinct value once (names, statuses, sizes
    and errors repeat: this is faster, and the values share one object each)."""
    converted = {raw: convert(raw) for raw in set(column)}
    return list(map(converted.__getitem__, column))


def _decode_replace(raw: bytes) -> str:
    return raw.decode(errors="replace")
