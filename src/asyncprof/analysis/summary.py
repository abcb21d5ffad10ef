"""The run summary: what ``asyncprof report`` shows before any attribution.

:func:`summarize` is a pure function of the run directory's files.  Its
result is the JSON contract of ``asyncprof report --json`` (see README).
"""

from collections import defaultdict
from typing import Any

from asyncprof.analysis.requests import RequestLog, read_request_log
from asyncprof.analysis.spans import index_spans
from asyncprof.analysis.stacks import count_samples
from asyncprof.analysis.stats import latency_summary, percentile
from asyncprof.run import Run


def measured_window(run: Run, log: RequestLog) -> tuple[float | None, float | None]:
    """The manifest's window, or, for a run that never recorded one, warm-up after the first request."""
    window = run.manifest.get("window") or {}
    begin, end = window.get("start_unix"), window.get("end_unix")
    if begin is None and log.start:
        begin = min(log.start) + float(run.manifest.get("config", {}).get("warmup", 0))
    return begin, end


def summarize(run: Run, full_log: RequestLog | None = None) -> dict[str, Any]:
    """Summarise *run*: throughput and latency in the measured window, per endpoint, and instruments.

    *full_log* is the run's whole ``requests.tsv`` when the caller has read it already (the
    full report reads it once for the summary and the attribution); None reads it here.
    """
    manifest = run.manifest
    config = manifest.get("config", {})
    if full_log is None:
        full_log = read_request_log(run.requests_path)
    begin, end = measured_window(run, full_log)
    log = full_log.window(begin, end)
    if end is None and log.start:
        end = max(log.start)
    seconds = (end - begin) if (begin is not None and end is not None and end > begin) else None

    errors = sum(1 for i in range(len(log)) if log.is_error(i))
    open_loop = config.get("rate") is not None
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(log.name):
        by_name[name].append(i)
    endpoints = [
        {
            "name": name,
            "requests": len(idx),
            "errors": sum(1 for i in idx if log.is_error(i)),
            "latency_ms": latency_summary([log.latency_ms[i] for i in idx]),
        }
        for name, idx in sorted(by_name.items())
    ]

    warnings: list[str] = list(manifest.get("warnings", []))
    if full_log.skipped:
        warnings.append(f"{full_log.skipped} damaged lines in requests.tsv were skipped")
    instruments = manifest.get("instruments", {})
    report_instruments: dict[str, Any] = {}

    pyspy_on = instruments.get("pyspy", {}).get("enabled", False)
    samples = count_samples(run.pyspy_dir / "samples.txt")
    report_instruments["pyspy"] = {
        "enabled": pyspy_on,
        "samples": samples.samples,
        "idle_samples": samples.idle,
        "samples_by_pid": {str(k): v for k, v in sorted(samples.by_pid.items())},
    }
    if pyspy_on and samples.samples == 0:
        warnings.append("py-spy was on but recorded no samples" + _reason(instruments.get("pyspy", {})))

    otel_on = instruments.get("otel", {}).get("enabled", False)
    spans = index_spans(run.spans_dir)
    # With --sample-traces only the sampled traces have spans: the match rate is over those.
    sample_rate = float(instruments.get("otel", {}).get("sample_traces") or 1.0)
    flags = log.sampled if len(log.sampled) == len(log.trace_id) else [True] * len(log.trace_id)
    sampled_ids = [t for t, kept in zip(log.trace_id, flags) if t and kept]
    matched = sum(1 for t in sampled_ids if t in spans.server_trace_ids)
    expected = len(log) if sample_rate >= 1 else len(sampled_ids)
    report_instruments["otel"] = {
        "enabled": otel_on,
        "spans": spans.spans,
        "matched_requests": matched,
        "match_rate": round(matched / expected, 4) if expected else None,
        "sample_traces": sample_rate,
        "sampled_requests": len(sampled_ids),
        "match_rate_over": "sampled traces" if sample_rate < 1 else "requests",
    }
    if otel_on and expected and matched < 0.99 * expected:
        what = "sampled traces" if sample_rate < 1 else "requests"
        warnings.append(f"only {matched} of {expected} {what} have a server span (below 99%)")

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
