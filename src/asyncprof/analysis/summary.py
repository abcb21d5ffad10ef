"""The run summary: what ``asyncprof report`` shows before any attribution.

:func:`summarize` is a pure function of the run directory's files.  Its
result is the JSON contract of ``asyncprof report --json`` (see README).
"""

import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from itertools import compress
from pathlib import Path
from typing import Any

from asyncprof.analysis.completeness import COMPLETE_AT, account_requests, describe_unmatched
from asyncprof.analysis.requests import RequestLog, read_request_log
from asyncprof.analysis.spans import index_spans
from asyncprof.analysis.stacks import StackTally, count_samples
from asyncprof.analysis.stats import latency_summary, percentile
from asyncprof.run import Run


def measured_window(run: Run, log: RequestLog) -> tuple[float | None, float | None]:
    """The manifest's window, or, for a run that never recorded one, warm-up after the first request."""
    window = run.manifest.get("window") or {}
    begin, end = window.get("start_unix"), window.get("end_unix")
    if begin is None and log.start:
        begin = min(log.start) + float(run.manifest.get("config", {}).get("warmup", 0))
    return begin, end


def summarize(run: Run, full_log: RequestLog | None = None, stacks: StackTally | None = None,
              window: RequestLog | None = None) -> dict[str, Any]:
    """Summarise *run*: throughput and latency in the measured window, per endpoint, and instruments.

    *full_log* is the run's whole ``requests.tsv``, *window* its requests of the measured window
    (``full_log.window(*measured_window(run, full_log))``) and *stacks* the tally of
    ``pyspy/samples.txt`` when the caller has them already (the full report reads each once for
    the summary, the attribution and the CPU profile); None reads or cuts them here.
    """
    manifest = run.manifest
    config = manifest.get("config", {})
    if full_log is None:
        full_log = read_request_log(run.requests_path)
    begin, end = measured_window(run, full_log)
    log = window if window is not None else full_log.window(begin, end)
    if end is None and log.start:
        end = max(log.start)
    seconds = (end - begin) if (begin is not None and end is not None and end > begin) else None

    failed = log.error_flags()
    errors = sum(failed)
    open_loop = config.get("rate") is not None
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(log.name):
        by_name[name].append(i)
    endpoints = [
        {
            "name": name,
            "requests": len(idx),
            "errors": sum(map(failed.__getitem__, idx)),
            "latency_ms": latency_summary(list(map(log.latency_ms.__getitem__, idx))),
        }
        for name, idx in sorted(by_name.items())
    ]
    del by_name  # an index per request: tens of MB on a long run, not needed past here

    warnings: list[str] = list(manifest.get("warnings", []))
    if full_log.skipped:
        warnings.append(f"{full_log.skipped} damaged lines in requests.tsv were skipped")
    instruments = manifest.get("instruments", {})
    report_instruments: dict[str, Any] = {}

    pyspy_on = instruments.get("pyspy", {}).get("enabled", False)
    samples = count_samples(stacks if stacks is not None else run.pyspy_dir / "samples.txt")
    report_instruments["pyspy"] = {
        "enabled": pyspy_on,
        "samples": samples.samples,
        "idle_samples": samples.idle,
        "samples_by_pid": {str(k): v for k, v in sorted(samples.by_pid.items())},
    }
    if pyspy_on and samples.samples == 0:
        warnings.append("py-spy was on but recorded no samples" + _reason(instruments.get("pyspy", {})))
    if samples.skipped_lines:
        warnings.append(f"{samples.skipped_lines} damaged lines in pyspy/samples.txt were skipped")
    if samples.unreadable:
        warnings.append(f"cannot read pyspy/samples.txt: {samples.unreadable}")

    otel_on = instruments.get("otel", {}).get("enabled", False)
    spans = index_spans(run.spans_dir)
    if spans.skipped_lines:
        warnings.append(f"{spans.skipped_lines} damaged lines in spans/*.jsonl were skipped")
    if spans.unreadable_files:
        warnings.append(f"cannot read span files: {', '.join(spans.unreadable_files[:5])}")
    # With --sample-traces only the sampled traces have spans: the match rate is over those.
    sample_rate = float(instruments.get("otel", {}).get("sample_traces") or 1.0)
    worker_spans = [w.get("spans") for w in run.worker_infos()]
    accounted = account_requests(log, spans.server_trace_ids, sample_rate, worker_spans)
    what = "sampled traces" if sample_rate < 1 else "requests"
    report_instruments["otel"] = {
        "enabled": otel_on,
        "spans": spans.spans,
        "matched_requests": accounted["matched"],
        "match_rate": accounted["match_rate"],
        "complete": accounted["complete"] if otel_on else None,
        "unmatched": accounted["unmatched"],
        "span_counts": accounted["spans"],
        "sample_traces": sample_rate,
        "sampled_requests": accounted["expected"] if sample_rate < 1 else sum(1 for t in log.trace_id if t),
        "match_rate_over": what,
    }
    if otel_on and accounted["complete"] is False:
        warnings.append(f"incomplete run: only {accounted['matched']} of {accounted['expected']} {what} have a "
                        f"server span (below {COMPLETE_AT:.0%}): {describe_unmatched(accounted['unmatched'])}")
    lost = accounted["spans"]["lost"] + accounted["spans"]["write_failed"]
    if otel_on and lost:
        warnings.append(f"the workers lost {lost} of {accounted['spans']['ended']} spans they ended "
                        f"({accounted['spans']['write_failed']} failed to write)")
    if otel_on and accounted["spans"]["otlp_failed"]:
        warnings.append(f"{accounted['spans']['otlp_failed']} spans failed to reach the OTLP endpoint "
                        f"({accounted['spans']['otlp_sent']} sent)")

    profiles = sum(1 for _ in run.profiles_dir.glob("*.pyisession")) if run.profiles_dir.is_dir() else 0
    report_instruments["pyinstrument"] = {
        "enabled": instruments.get("pyinstrument", {}).get("enabled", False),
        "profiles": profiles,
    }
    for name, info in instruments.items():
        if not info.get("enabled", False):
            warnings.append(f"{name} was off for this run: its data is missing from the report")

    return {
        "run_id": run.run_id,
        "mode": config.get("mode"),
        "scenario": config.get("scenario"),
        "view": config.get("view"),
        "app": manifest.get("app") if isinstance(manifest.get("app"), dict) else None,
        "status": manifest.get("status"),
        "workers": config.get("workers"),
        "users": config.get("users"),
        "window_s": round(seconds, 3) if seconds else None,
        "requests": len(log),
        "errors": errors,
        "error_rate": round(errors / len(log), 6) if len(log) else None,
        "throughput_rps": _throughput(full_log, log, begin, end, seconds, open_loop),
        "load": _load(manifest, full_log, log, begin, end, seconds),
        "latency_ms": latency_summary(log.latency_ms),
        "endpoints": endpoints,
        **faults_and_errors(run, log, begin, failed),
        "instruments": report_instruments,
        "database": manifest.get("database", {}),
        "warnings": warnings,
    }


def _throughput(full_log: RequestLog, log: RequestLog, begin: float | None, end: float | None,
                seconds: float | None, open_loop: bool) -> float | None:
    """Requests per second in the window.

    Closed loop: requests started in the window (each user's next start follows its last
    answer).  Open loop: answers *received* in the window, since requests start on schedule
    whatever the server does, and counting starts would report the offered rate, not the
    server's.
    """
    if not seconds or begin is None or end is None:
        return None
    if not open_loop:
        return round(len(log) / seconds, 2)
    done = sum(1 for s, lat in zip(full_log.start, full_log.latency_ms, strict=True) if begin <= s + lat / 1000 < end)
    return round(done / seconds, 2)


def _load(manifest: dict[str, Any], full_log: RequestLog, log: RequestLog, begin: float | None, end: float | None,
          seconds: float | None) -> dict[str, Any]:
    """The load as asked and as delivered.

    ``model`` is ``closed`` or ``open``; in open loop ``offered_rps`` is the arrival rate asked
    for, ``scheduled_rps`` the requests scheduled in the window per second, ``sent_rps`` those
    actually sent in the window (schedule lag included) and ``lag_ms`` the schedule lag's p50,
    p99 and maximum: a generator that keeps up sends within a few ms of the schedule.
    """
    load = manifest.get("load") if isinstance(manifest.get("load"), dict) else {}
    config = manifest.get("config", {})
    out: dict[str, Any] = {
        "model": "open" if config.get("rate") is not None else "closed",
        "processes": load.get("processes", config.get("load_processes", 1)),
        "pinning": manifest.get("pinning"),
    }
    if out["model"] == "closed":
        out["users"] = config.get("users")
        return out
    out["offered_rps"] = config.get("rate")
    out["connections_per_process"] = config.get("users")
    if seconds and begin is not None and end is not None:
        out["scheduled_rps"] = round(len(log) / seconds, 2)
        sent = sum(1 for s, lag in zip(full_log.start, full_log.lag_ms, strict=True)
                   if lag is not None and begin <= s + lag / 1000 < end)
        out["sent_rps"] = round(sent / seconds, 2)
    lags = sorted(v for v in log.lag_ms if v is not None)
    if lags:
        out["lag_ms"] = {"p50": round(percentile(lags, 50), 3), "p99": round(percentile(lags, 99), 3),
                         "max": round(lags[-1], 3)}
    return out


def _reason(info: dict[str, Any]) -> str:
    return f": {info['error']}" if info.get("error") else ""


# --- faults during the run and what the failed requests were --------------------------------------

#: gunicorn's arbiter on a worker that ended badly (``reap_workers``); other servers say nothing.
_WORKER_SIGNAL = re.compile(r"Worker \(pid:(\d+)\) was sent (SIG\w+|signal \d+)")
_WORKER_EXIT = re.compile(r"Worker \(pid:(\d+)\) exited with code (-?\d+)")
#: A traceback's frames or message naming a database driver or Django's database layer.
_DATABASE_TRACE = re.compile(r"asyncpg|psycopg|django/db/|OperationalError|InterfaceError|database system|"
                             r"could not connect to server|server closed the connection", re.IGNORECASE)
#: Errors whose request ended from this long before a recorded fault on count towards it: the fault was
#: found on the recorder's next tick (0.25 s), after the clients had already seen it.
FAULT_SLACK_S = 1.0
#: When at least this share of the exceptions the server logged went through the database, its HTTP 5xx
#: answers are classed as database errors.
DATABASE_ERRORS_SHARE = 0.9
#: How many distinct server-side exceptions the report lists.
SERVER_ERRORS_LISTED = 5


def faults_and_errors(run: Run, log: RequestLog, begin: float | None,
                      failed: Sequence[bool] | None = None) -> dict[str, Any]:
    """``faults`` (workers that died, the database lost, as recorded and as the server log says),
    ``errors_by_class`` (the window's failed requests by what failed) and ``server_errors`` (the
    exceptions in the server log, the database's marked).  *failed*: ``log.error_flags()``, if the
    caller has it already."""
    manifest = run.manifest
    recorded = [f for f in manifest.get("faults", []) if isinstance(f, dict)] \
        if isinstance(manifest.get("faults"), list) else []
    exits = _worker_exits(run.logs_dir / "server.log")
    faults: list[dict[str, Any]] = []
    for f in recorded:
        if f.get("kind") == "worker_died" and isinstance(f.get("pid"), int):
            faults.append({"kind": "worker_died", "pid": f["pid"], "unix": _float(f.get("unix")),
                           "replaced_by": f.get("replaced_by"), "ready_unix": _float(f.get("replacement_ready_unix")),
                           **exits.pop(f["pid"], {"signal": None, "exit_code": None})})
        elif f.get("kind") == "database_lost":
            faults.append({"kind": "database_lost", "unix": _float(f.get("unix")), "detail": str(f.get("detail", ""))})
    watched = isinstance(manifest.get("faults"), list)  # by the recorder's ServerWatch, so the log adds nothing
    for pid, how in sorted(exits.items()) if not watched else ():  # older runs: only the log says
        faults.append({"kind": "worker_died", "pid": pid, "unix": None, "replaced_by": None, "ready_unix": None, **how})

    if failed is None:
        failed = log.error_flags()
    classes: list[str | None] = [None] * len(log)
    examples: dict[str, str] = {}
    for i in compress(range(len(log)), failed):  # only the failed requests: usually a few
        c = classes[i] = _error_class(log, i, faults)
        if c not in examples:
            examples[c] = log.error[i] or f"HTTP {log.status[i]}"
    by_class: Counter[str] = Counter(c for c in classes if c is not None)
    for f in faults:
        _fault_numbers(f, log, classes, begin)
    server_errors = _server_errors(run.logs_dir / "server.log")
    logged = sum(e["count"] for e in server_errors)
    if logged and sum(e["count"] for e in server_errors if e["database"]) >= DATABASE_ERRORS_SHARE * logged:
        # No fault recorded, but what the server logged is the database failing: say so for its 5xx.
        for c in [c for c in by_class if c.startswith("HTTP 5")]:
            name = f"database error ({c})"
            by_class[name] = by_class.pop(c)
            examples[name] = examples.pop(c)
    return {
        "faults": faults,
        "errors_by_class": [{"class": c, "requests": n, "example": examples[c][:200]}
                            for c, n in by_class.most_common()],
        "server_errors": server_errors,
    }


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _worker_exits(path: Path) -> dict[int, dict[str, Any]]:
    """pid -> {"signal", "exit_code"} for every worker the server log says was killed or exited non-zero."""
    out: dict[int, dict[str, Any]] = {}
    for line in _lines(path):
        if "Worker (pid:" not in line:
            continue
        if m := _WORKER_SIGNAL.search(line):
            if m.group(2) != "SIGTERM":  # SIGTERM is the master's own graceful stop
                out.setdefault(int(m.group(1)), {"signal": None, "exit_code": None})["signal"] = m.group(2)
        elif (m := _WORKER_EXIT.search(line)) and m.group(2) != "0":
            out.setdefault(int(m.group(1)), {"signal": None, "exit_code": None})["exit_code"] = int(m.group(2))
    return out


def _lines(path: Path) -> Iterator[str]:
    try:
        f = open(path, errors="replace")  # noqa: SIM115
    except OSError:
        return
    with f:
        yield from f


def _end(log: RequestLog, i: int) -> float:
    return log.start[i] + log.latency_ms[i] / 1000


def _error_class(log: RequestLog, i: int, faults: list[dict[str, Any]]) -> str:
    """What made failed request *i* fail: a recorded fault it falls in, else what the client saw."""
    status, end = log.status[i], _end(log, i)
    for f in faults:
        at = f.get("unix")
        if at is None:
            continue
        if f["kind"] == "database_lost" and status >= 500 and end >= at - FAULT_SLACK_S:
            return "database unavailable"
        if f["kind"] == "worker_died":  # cut off (no answer, a 5xx, half a body) while it went
            until = f.get("ready_unix") or at
            if at - FAULT_SLACK_S <= end <= max(until, at) + FAULT_SLACK_S:
                return "worker died"
    if status >= 400:
        return f"HTTP {status}"
    text = log.error[i].lower()
    for words, name in ((("refused",), "connection refused"),
                        (("reset", "disconnected", "aborted", "closed", "broken pipe", "eof", "incomplete"),
                         "connection reset"),
                        (("timeout", "timed out"), "timeout")):
        if any(w in text for w in words):
            return name
    return "no response"


def _fault_numbers(f: dict[str, Any], log: RequestLog, classes: list[str | None], begin: float | None) -> None:
    """Add to fault *f*: when it happened in the window (``t_s``), how many requests failed with it, and
    for a worker, its replacement's delay and the throughput while it was missing."""
    at = f.get("unix")
    f["t_s"] = round(at - begin, 3) if at is not None and begin is not None else None
    name = "database unavailable" if f["kind"] == "database_lost" else "worker died"
    if f["kind"] == "database_lost":
        failed = [_end(log, i) for i, c in enumerate(classes) if c == name]
        f["failed_requests"] = len(failed)
        # From the first failure on (the fault was found a tick after the clients saw it).
        f["requests_after"] = sum(1 for i in range(len(log)) if _end(log, i) >= min(failed)) if failed else 0
        return
    ready = f.get("ready_unix")
    f["replacement_after_s"] = round(max(0.0, ready - at), 3) if ready is not None and at is not None else None
    if at is None:
        f["failed_requests"] = None
        return
    until = max(ready or at, at)
    f["failed_requests"] = sum(1 for i, c in enumerate(classes) if c == name and at - FAULT_SLACK_S <= _end(log, i)
                               <= until + FAULT_SLACK_S)
    gap = until - at
    f["gap_s"] = round(gap, 3)
    if gap >= 0.2 and log.start:
        inside = sum(1 for s in log.start if at <= s < until)
        first, last = min(log.start), max(log.start)
        outside_s = (last - first) - gap
        f["gap_throughput_rps"] = round(inside / gap, 2)
        f["other_throughput_rps"] = round((len(log) - inside) / outside_s, 2) if outside_s > 0 else None


def _server_errors(path: Path) -> list[dict[str, Any]]:
    """The exceptions the server logged (the last of each traceback), most frequent first; ``database``
    when the traceback runs through a database driver or Django's database layer."""
    counts: Counter[tuple[str, bool]] = Counter()
    block: list[str] = []

    def flush() -> None:
        message = next((ln for ln in reversed(block) if ln and not ln[0].isspace() and ": " in ln
                        and not ln.startswith(("Traceback", "During handling", "The above exception"))), None)
        if message is not None:
            counts[(message.strip()[:200], bool(_DATABASE_TRACE.search("\n".join(block))))] += 1
        block.clear()

    for line in _lines(path):
        line = line.rstrip("\n")
        if line.startswith("Traceback (most recent call last)"):
            if block and not any(ln.startswith(("During handling", "The above exception")) for ln in block[-3:]):
                flush()
            block.append(line)
        elif block and (line.startswith("[") or line.startswith("Internal Server Error")):
            flush()
        elif block:
            block.append(line)
    if block:
        flush()
    return [{"error": e, "count": n, "database": db} for (e, db), n in counts.most_common(SERVER_ERRORS_LISTED)]

