"""Read the workers' accounting files: per-request records joined to client requests, and worker summaries.

Two inputs, both written by ``asyncprof.worker.accounting`` into ``accounting/`` of the run
directory (the format is :mod:`asyncprof.worker.record_format`):

* ``<pid>.tsv``: a header line, then one line per finished request, integer microseconds.
  :func:`read_records` streams every such file once and keeps only the records whose trace id
  is one of the client requests it is asked about, grouped by that client request's endpoint
  name, as one ``array('q')`` per column (a million records is a few tens of MB, not a few GB of
  Python objects).  Damaged lines (a worker killed mid-write, a torn last line, a wrong field
  count, a non-integer duration) are skipped and counted, never fatal.
* ``<pid>.json``: the worker's summary (loop implementation, hop call sites, loop-thread CPU,
  the hooks' own cost).  :func:`read_worker_summaries` reads them all; a missing or corrupt one
  is a warning, not an error.

Pure: reads files, executes nothing from them.
"""

from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from asyncprof.worker.record_format import COLUMNS

#: The text columns that precede the integer ones in every accounting line.
TEXT_COLUMNS: tuple[str, ...] = ("trace_id", "start_unix", "name")
#: The integer columns the analysis uses (all of ``COLUMNS`` after the text ones).
NUMERIC_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in TEXT_COLUMNS)
# Lines converted per orjson call: large enough to amortise the call, small enough that the
# joined chunk stays a few MB.
_CHUNK_LINES = 65_536
_DIGITS_AND_TAB = b"0123456789\t"


@dataclass
class RecordGroup:
    """The matched records of one endpoint: parallel columns, one entry per matched client request.

    ``client_index[i]`` is the index of the client request (in the request log the records were
    joined to) that record *i* belongs to; ``columns[c][i]`` its value of integer column *c*
    (every name of :data:`NUMERIC_COLUMNS`, zeros for a column an old file did not have).
    """

    client_index: array = field(default_factory=lambda: array("q"))
    columns: dict[str, array] = field(default_factory=lambda: {c: array("q") for c in NUMERIC_COLUMNS})

    def __len__(self) -> int:
        return len(self.client_index)


@dataclass
class JoinedRecords:
    """What :func:`read_records` found: matched records by endpoint, and what it could not use.

    ``records``: well-formed record lines in all files (matched or not); ``matched``: records
    joined to a client request (at most one per request: a repeated trace id joins once);
    ``skipped_lines``: damaged lines; ``files``: record files read.
    """

    groups: dict[str, RecordGroup] = field(default_factory=dict)
    records: int = 0
    matched: int = 0
    skipped_lines: int = 0
    files: int = 0
    warnings: list[str] = field(default_factory=list)


def read_records(directory: Path, trace_ids: Sequence[str], names: Sequence[str]) -> JoinedRecords:
    """Join the records in ``directory/*.tsv`` to client requests by trace id.

    *trace_ids* and *names* are the client requests' columns (``RequestLog.trace_id`` and
    ``.name`` of the measured window); record *i* of a group has ``client_index`` into them.
    Empty trace ids never match.  A missing directory gives an empty result.
    """
    out = JoinedRecords()
    if not directory.is_dir():
        return out
    # Keyed by the id's bytes: the file's lines are never decoded.  A repeated client trace id
    # keeps its last request; an empty one never matches.
    wanted: dict[bytes, int] = dict(zip(map(str.encode, trace_ids), range(len(trace_ids))))
    wanted.pop(b"", None)
    for path in sorted(directory.glob("*.tsv")):
        out.files += 1
        try:
            _read_file(path, wanted, names, out)
        except OSError as exc:
            out.warnings.append(f"cannot read {path.name}: {exc}")
    return out


def _read_file(path: Path, wanted: dict[bytes, int], names: Sequence[str], out: JoinedRecords) -> None:
    """Scan one record file into *out*; matched trace ids are removed from *wanted* (join once)."""
    with open(path, "rb") as f:
        first = f.readline()
        header = first.rstrip(b"\r\n").decode("latin-1").split("\t")
        if header[: len(TEXT_COLUMNS)] == list(TEXT_COLUMNS):
            numeric = header[len(TEXT_COLUMNS):]
            lines: list[bytes] = []
        else:
            # No header (a torn file start): assume today's format and treat the line as data.
            numeric = list(NUMERIC_COLUMNS)
            lines = [first] if first else []
        missing = [c for c in NUMERIC_COLUMNS if c not in numeric]
        if missing:
            out.warnings.append(f"{path.name} has no column {', '.join(missing)} (an older format?): counted as 0")
        tabs = len(numeric) - 1  # tabs inside the numeric tail of a good line
        width = len(numeric)
        pending: dict[str, tuple[list[bytes], list[int]]] = {}
        unmatched: list[bytes] = []
        pop = wanted.pop
        # The hot loop: only the field count is checked per line; the integers are validated
        # per chunk by _convert, and what does not convert is dropped and counted.
        for raw in chain(lines, f):
            parts = raw.rstrip(b"\r\n").split(b"\t", 3)
            if len(parts) != 4 or parts[3].count(b"\t") != tabs:
                if raw.strip():
                    out.skipped_lines += 1
                continue
            out.records += 1
            index = pop(parts[0], None)
            if index is None:
                # Not joined, but still checked, so that the damage count covers every line.
                unmatched.append(parts[3])
                if len(unmatched) >= _CHUNK_LINES:
                    _drop(out, len(unmatched) - len(_convert(unmatched, width)[1]))
                    unmatched = []
                continue
            try:
                tails, indices = pending[names[index]]
            except KeyError:
                tails, indices = pending[names[index]] = ([], [])
            tails.append(parts[3])
            indices.append(index)
    if unmatched:
        _drop(out, len(unmatched) - len(_convert(unmatched, width)[1]))
    for name, (tails, indices) in pending.items():
        group = out.groups.setdefault(name, RecordGroup())
        before = len(group)
        _append_rows(group, numeric, tails, indices)
        out.matched += len(group) - before
        _drop(out, len(indices) - (len(group) - before))


def _drop(out: JoinedRecords, lines: int) -> None:
    """Move *lines* counted as records to the damaged lines."""
    out.records -= lines
    out.skipped_lines += lines


def _convert(tails: list[bytes], width: int) -> tuple[array, range | list[int]]:
    """(the integers of *tails*, row by row; the positions in *tails* of the rows kept).

    One orjson call turns ``1\\t2\\t3…`` into ints far faster than ``int()`` per field.  Only
    when that fails (a damaged line: a letter, an empty field, a float, a sign, a comma, a
    leading zero JSON refuses, a number beyond 64 bits) are the lines converted one by one, and
    a line that is not exactly *width* runs of ASCII digits of a 64-bit integer is left out (never
    an exception: the caller counts what was left out as damaged lines).
    """
    joined = b"\t".join(tails)
    # Only digits and tabs (no sign, dot, comma, letter, space: JSON would take some of those),
    # and tabs were counted per line: the JSON below is then a flat list of naturals or invalid.
    if not joined.translate(None, _DIGITS_AND_TAB):
        try:
            flat = array("q", orjson.loads(b"[" + joined.replace(b"\t", b",") + b"]"))
            if len(flat) == width * len(tails):
                return flat, range(len(tails))
        except (orjson.JSONDecodeError, OverflowError, TypeError):
            pass
    flat, kept = array("q"), []
    for i, tail in enumerate(tails):
        fields = tail.split(b"\t")
        if len(fields) != width or not all(v.isdigit() for v in fields):
            continue
        try:
            row = array("q", map(int, fields))
        except (OverflowError, ValueError):  # beyond 64 bits, or beyond int()'s 4300-digit limit
            continue
        flat.extend(row)
        kept.append(i)
    return flat, kept


def _append_rows(group: RecordGroup, numeric: Sequence[str], tails: list[bytes], indices: list[int]) -> None:
    """Convert tab-separated integer tails into *group*'s columns, chunk by chunk; damaged rows are left out."""
    width = len(numeric)
    position = {c: numeric.index(c) for c in NUMERIC_COLUMNS if c in numeric}
    for start in range(0, len(tails), _CHUNK_LINES):
        flat, kept = _convert(tails[start:start + _CHUNK_LINES], width)
        for column, values in group.columns.items():
            p = position.get(column)
            values.extend(flat[p::width] if p is not None else array("q", bytes(8 * len(kept))))
        chunk_indices = indices[start:start + _CHUNK_LINES]
        group.client_index.extend(chunk_indices if isinstance(kept, range) else [chunk_indices[k] for k in kept])


# --- worker summaries -------------------------------------------------------------------------


@dataclass
class WorkerSummaries:
    """The workers' ``<pid>.json`` summaries, combined.

    ``workers``: the readable summaries as written.  ``interface``/``loop``: the value all
    readable summaries agree on (None if none say, ``"mixed"`` if they disagree).  Sums are over
    the workers that reported the field (None if none did).  ``hook_cost_us_per_request`` is the
    request-weighted mean.  ``requests``: every request the workers served; ``accounted``: those in
    the sample, with a record (the hop-site counts are over these; equal to ``requests`` in runs
    that followed every request, and in summaries older than sampling).  ``missing_pids``: record
    files without a summary.
    """

    workers: list[dict[str, Any]] = field(default_factory=list)
    interface: str | None = None
    loop: str | None = None
    ready_wait_measured: bool | None = None
    hop_sites: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    accounted: int = 0
    loop_thread_cpu_s: float | None = None
    steps_cpu_s: float | None = None
    hook_cost_us_per_request: float | None = None
    missing_pids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "workers": len(self.workers),
            "interface": self.interface,
            "loop": self.loop,
            "ready_wait_measured": self.ready_wait_measured,
            "requests": self.requests,
            "accounted": self.accounted,
            "hop_sites": dict(self.hop_sites.most_common()),
            "loop_thread_cpu_s": _round(self.loop_thread_cpu_s, 3),
            "steps_cpu_s": _round(self.steps_cpu_s, 3),
            "hook_cost_us_per_request": _round(self.hook_cost_us_per_request, 2),
        }


def read_worker_summaries(directory: Path) -> WorkerSummaries:
    """Read and combine ``directory/<pid>.json``; unreadable files and wrong types become warnings."""
    out = WorkerSummaries()
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        try:
            info = orjson.loads(path.read_bytes())
        except (orjson.JSONDecodeError, OSError) as exc:
            out.warnings.append(f"worker summary {path.name} is unreadable ({exc}): "
                                "its hop sites and loop CPU are missing")
            continue
        if not isinstance(info, dict):
            out.warnings.append(f"worker summary {path.name} is not a JSON object: ignored")
            continue
        out.workers.append(info)
    summarised = {path.stem for path in directory.glob("*.json")}
    out.missing_pids = sorted(p.stem for p in directory.glob("*.tsv") if p.stem not in summarised)
    if out.missing_pids:
        out.warnings.append(
            f"{len(out.missing_pids)} worker(s) wrote records but no summary (killed before exit?): "
            f"pid {', '.join(out.missing_pids)}; hop sites and loop CPU leave them out"
        )
    _combine(out)
    return out


def _combine(out: WorkerSummaries) -> None:
    interfaces = {w["interface"] for w in out.workers if isinstance(w.get("interface"), str)}
    loops = {w["loop"] for w in out.workers if isinstance(w.get("loop"), str)}
    out.interface = _agreed(interfaces)
    out.loop = _agreed(loops)
    ready = [w["ready_wait_measured"] for w in out.workers if isinstance(w.get("ready_wait_measured"), bool)]
    out.ready_wait_measured = all(ready) if ready else None
    cost_weighted, cost_requests = 0.0, 0
    for w in out.workers:
        requests = _int(w.get("requests"))
        out.requests += requests
        out.accounted += _int(w.get("records_written", requests))
        sites = w.get("hop_sites")
        if isinstance(sites, Mapping):
            for site, count in sites.items():
                out.hop_sites[str(site)] += _int(count)
        out.loop_thread_cpu_s = _add(out.loop_thread_cpu_s, w.get("loop_thread_cpu_s"))
        out.steps_cpu_s = _add(out.steps_cpu_s, w.get("steps_cpu_s"))
        cost = _float(w.get("hook_cost_us_per_request"))
        if cost is not None and requests:
            cost_weighted += cost * requests
            cost_requests += requests
    out.hook_cost_us_per_request = cost_weighted / cost_requests if cost_requests else None


def _agreed(values: set[str]) -> str | None:
    if not values:
        return None
    return next(iter(values)) if len(values) == 1 else "mixed"


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _add(total: float | None, v: Any) -> float | None:
    f = _float(v)
    if f is None:
        return total
    return f if total is None else total + f


def _round(v: float | None, places: int) -> float | None:
    return None if v is None else round(v, places)
