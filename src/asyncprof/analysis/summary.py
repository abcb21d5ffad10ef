"""The run summary: what ``asyncprof report`` shows before any attribution.

:func:`summarize` is a pure function of the run directory's files.  Its
result is the JSON contract of ``asyncprof report --json`` (see README).
"""

from collections import defaultdict
from typing import Any

from asyncprof.analysis.requests import RequestLog, read_request_log
from asyncprof.analysis.spans import index_spans
from asyncprof.analysis.stacks import count_samples
from asyncprof.analysis.stats import latency_summary
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
    window_trace_ids = [t for t in log.trace_id if t]
    matched = sum(1 for t in window_trace_ids if t in spans.server_trace_ids)
    report_instruments["otel"] = {
        "enabled": otel_on,
        "spans": spans.spans,
        "matched_requests": matched,
        "match_rate": round(matched / len(log), 4) if len(log) else None,
    }
    if otel_on and len(log) and matched < 0.99 * len(log):
        warnings.append(f"only {matched} of {len(log)} requests have a server span (below 99%)")

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
        "throughput_rps": round(len(log) / seconds, 2) if seconds else None,
        "latency_ms": latency_summary(log.latency_ms),
        "endpoints": endpoints,
        "instruments": report_instruments,
        "database": manifest.get("database", {}),
        "warnings": warnings,
    }


def _reason(info: dict[str, Any]) -> str:
    return f": {info['error']}" if info.get("error") else ""
