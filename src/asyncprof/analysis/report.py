"""The full report of a run: the summary plus where the time went, the CPU profile, findings and capacity.

:func:`build_report` is a pure function of the run directory's files and the JSON contract of
``asyncprof report --json`` (see README).  It composes:

* :func:`asyncprof.analysis.summary.summarize` (throughput, latency, endpoints, instruments);
* :mod:`~asyncprof.analysis.attribution` over :mod:`~asyncprof.analysis.records` (the workers'
  accounting files joined to the window's client requests by trace id);
* :func:`~asyncprof.analysis.cpu_profile.cpu_profile` (py-spy's on-CPU samples by category);
* :func:`~asyncprof.analysis.findings.diagnose` and :func:`~asyncprof.analysis.capacity.assess_capacity`.

A missing source (an instrument switched off, a run interrupted before the workers flushed,
an older run, a corrupt file) never raises: the keys it feeds are present with null values
and a warning says what is missing.
"""

from collections.abc import Mapping
from typing import Any

from asyncprof.analysis.attached import apply_run_kind
from asyncprof.analysis.attribution import Attribution, attribute
from asyncprof.analysis.capacity import CapacityInputs, assess_capacity
from asyncprof.analysis.categories import DEFAULT_APP_PACKAGES
from asyncprof.analysis.cpu_profile import CpuProfile, cpu_profile
from asyncprof.analysis.findings import Diagnosis, FindingInputs, diagnose
from asyncprof.analysis.instrument_cost import instrument_cost
from asyncprof.analysis.records import JoinedRecords, WorkerSummaries, read_records, read_worker_summaries
from asyncprof.analysis.requests import RequestLog, read_request_log
from asyncprof.analysis.stacks import StackTally, tally_stacks
from asyncprof.analysis.summary import measured_window, summarize
from asyncprof.run import Run
from asyncprof.worker.record_format import ACCOUNTING_DIR

#: Below this share of the window's requests with a record, the breakdown may not represent
#: the run (the same bar as for OTel spans in the summary).
MIN_MATCH_RATE = 0.99


def build_report(run: Run) -> dict[str, Any]:
    """The report dict: everything :func:`summarize` gives, plus the keys listed in the README."""
    full_log = read_request_log(run.requests_path)
    log = full_log.window(*measured_window(run, full_log))
    stacks = tally_stacks(run.pyspy_dir / "samples.txt")  # read once: the sample counts and the CPU profile
    report = summarize(run, full_log, stacks, log)
    del full_log  # only the window is read from here on: its columns' memory back before the records'
    apply_run_kind(run.manifest, report)  # attach runs: what is missing, before the findings read the report
    warnings: list[str] = report["warnings"]
    manifest = run.manifest
    if manifest.get("status") in ("interrupted", "failed"):
        warnings.append(f"the run's status is {manifest['status']}: "
                        "the report covers what was recorded before it stopped")

    attribution, workers = _attribution(run, log, warnings)
    _add_attribution(report, attribution, workers)
    profile = _cpu_profile(run, stacks, warnings)
    report["cpu_profile"] = {c: round(s, 4) for c, s in profile.shares.items()} if profile else None
    report["cpu_profile_top"] = (
        {c: [{"function": f.function, "share": round(f.share, 4)} for f in fs]
         for c, fs in profile.top_functions.items()}
        if profile else None
    )
    report["instruments"]["pyspy"]["on_cpu_samples"] = profile.on_cpu_samples if profile else 0
    report["instrument_cost"] = instrument_cost(manifest, run.worker_infos(), workers.workers,
                                                int(report.get("requests") or 0))

    diagnosis = diagnose(_finding_inputs(run, report, workers, profile))
    report["findings"] = [f.to_json() for f in diagnosis.findings]
    report["valid"] = diagnosis.valid
    report["invalid_reasons"] = diagnosis.invalid_reasons
    report["capacity"] = assess_capacity(_capacity_inputs(run, report, workers, diagnosis))
    warnings += [f"capacity: {note}" for note in report["capacity"]["notes"]]
    return report


# --- accounting -------------------------------------------------------------------------------------


def _attribution(run: Run, log: RequestLog, warnings: list[str]) -> tuple[Attribution | None, WorkerSummaries]:
    """The attribution of the window (None when no request could be matched) and the worker summaries."""
    directory = run.path / ACCOUNTING_DIR
    enabled = _dict(_dict(run.manifest.get("instruments")).get("accounting")).get("enabled")
    joined = read_records(directory, log.trace_id, log.name)
    workers = read_worker_summaries(directory)
    warnings += joined.warnings + workers.warnings
    if joined.skipped_lines:
        warnings.append(f"{joined.skipped_lines} damaged lines in {ACCOUNTING_DIR}/*.tsv were skipped")
    missing = _missing_accounting(enabled, joined, len(log))
    if missing:
        if enabled is not False:  # the summary already says that an instrument was off
            warnings.append(missing)
        return None, workers
    result = attribute(log, joined)
    owed = result.client_requests  # the requests in the sample: only those are owed a record
    if result.matched < MIN_MATCH_RATE * owed:
        warnings.append(f"only {result.matched} of the {owed} {'sampled ' if owed < len(log) else ''}requests "
                        f"have an accounting record (below {MIN_MATCH_RATE:.0%}): the breakdown describes those")
    return result, workers


def _missing_accounting(enabled: Any, joined: JoinedRecords, requests: int) -> str | None:
    """Why there is no breakdown, in words, or None when there is one."""
    tail = ": attribution_ms, the breakdown findings and the event-loop capacity limit are missing"
    if enabled is False:
        return "accounting was off for this run" + tail
    if joined.files == 0:
        if enabled is None:
            return "this run has no accounting files (recorded before per-request accounting existed)" + tail
        return (f"accounting was on but no worker wrote {ACCOUNTING_DIR}/<pid>.tsv (stopped before the first "
                "batch was written, or the hooks failed: see logs/)" + tail)
    if joined.records == 0:
        return f"the {ACCOUNTING_DIR}/*.tsv files hold no readable record" + tail
    if requests == 0:
        return "no client request in the measured window" + tail
    if joined.matched == 0:
        return (f"none of the {joined.records} accounting records matches a client request of the measured window "
                "by trace id" + tail)
    return None


def _add_attribution(report: dict[str, Any], att: Attribution | None, workers: WorkerSummaries) -> None:
    report["attribution_ms"] = att.overall.breakdown() if att else None
    report["attribution_p99_ms"] = att.slowest.breakdown() if att else None
    report["hops_per_request"] = att.overall.per_request(att.overall.hops) if att else None
    report["queries_per_request"] = att.overall.per_request(att.overall.queries) if att else None
    report["upstream_calls_per_request"] = att.overall.per_request(att.overall.upstream_calls) if att else None
    accounting: dict[str, Any] = {
        "matched_requests": 0, "unmatched_requests": report["requests"], "match_rate": None,
        "records": 0, "skipped_lines": 0, "sum_check": None, "wall_ms": None, "pool_wait_ms": None,
    }
    if att:
        accounting = att.accounting_json()
    accounting["workers"] = workers.to_json()
    report["accounting"] = accounting
    for endpoint in report["endpoints"]:
        if att:
            endpoint.update(att.endpoint_json(endpoint["name"]))
        else:
            endpoint.update(attribution_ms=None, hops_per_request=None, queries_per_request=None,
                            upstream_calls_per_request=None, matched_requests=0)


# --- CPU profile ----------------------------------------------------------------------------------


def _cpu_profile(run: Run, stacks: StackTally, warnings: list[str]) -> CpuProfile | None:
    """The on-CPU profile from py-spy's samples (*stacks*: their tally); None without on-CPU samples
    (the summary says why when there are no samples at all; a warning here when every sample was idle)."""
    path = run.pyspy_dir / "samples.txt"
    if not path.is_file():
        return None
    packages = _dict(run.manifest.get("config")).get("app_packages")
    packages = tuple(str(p) for p in packages) if isinstance(packages, list) else ()
    profile = cpu_profile(stacks, packages)  # an unreadable file is the summary's warning
    if profile.samples and not profile.on_cpu_samples:
        warnings.append(f"py-spy recorded {profile.samples} samples but none on CPU: no CPU profile")
    return profile if profile.on_cpu_samples else None


# --- findings and capacity --------------------------------------------------------------------------


def _finding_inputs(run: Run, report: Mapping[str, Any], workers: WorkerSummaries,
                    profile: CpuProfile | None) -> FindingInputs:
    """What the findings read, from the report so far, the manifest and the workers' own files."""
    manifest = run.manifest
    window = _dict(manifest.get("cpu_window"))
    seconds = _num(window.get("seconds"))
    locust = _num(window.get("locust_cpu_s"))
    n_workers = _int(report.get("workers"))
    loop_busy = None
    rps = report.get("throughput_rps")
    if workers.loop_thread_cpu_s is not None and workers.requests and n_workers and rps:
        loop_busy = round(workers.loop_thread_cpu_s / workers.requests * rps / n_workers, 4)
    parsers = {str(w["http"]) for w in run.worker_infos() if w.get("http")}
    loops = {str(w["loop"]) for w in run.worker_infos() if w.get("loop")}
    return FindingInputs(
        interface=_interface(manifest, workers),
        workers=n_workers,
        cpus_usable=_cpus(manifest),
        attribution_ms=report.get("attribution_ms"),
        pool_wait_ms=report["accounting"].get("pool_wait_ms"),
        hops_per_request=report.get("hops_per_request"),
        queries_per_request=report.get("queries_per_request"),
        hop_sites=dict(workers.hop_sites),
        worker_requests=workers.accounted,  # the hop sites are counted over the sample
        cpu_shares=profile.shares if profile else None,
        cpu_top=report.get("cpu_profile_top"),
        connections=manifest.get("connections") if isinstance(manifest.get("connections"), str) else None,
        loop=workers.loop or (next(iter(loops)) if len(loops) == 1 else None),
        loop_busy=loop_busy,
        http_parser=next(iter(parsers)) if len(parsers) == 1 else ("mixed" if parsers else None),
        machine_busy_share=_num(window.get("machine_busy_share")),
        error_rate=report.get("error_rate"),
        locust_cores=round(locust / seconds, 4) if locust is not None and seconds else None,
        manifest_warnings=[w for w in manifest.get("warnings", []) if isinstance(w, str)]
        if isinstance(manifest.get("warnings"), list) else [],
        mode=_mode(manifest),
        threads=_int(_dict(manifest.get("server")).get("threads")),
        worker_connections=_worker_connections(run),
        users=_closed_loop_users(report),
        sync_middleware=_sync_middleware(run),
        app_packages=_app_packages(manifest),
        faults=report.get("faults") or (),
        errors_by_class=report.get("errors_by_class") or (),
    )


def _capacity_inputs(run: Run, report: Mapping[str, Any], workers: WorkerSummaries,
                     diagnosis: Diagnosis) -> CapacityInputs:
    """What the capacity check reads; the load generator's state comes from the diagnosis."""
    manifest = run.manifest
    window = _dict(manifest.get("cpu_window"))
    per_worker = window.get("workers_cpu_s")
    accounting = report["accounting"]
    return CapacityInputs(
        interface=_interface(manifest, workers),
        workers=_int(report.get("workers")),
        users=_closed_loop_users(report),
        cpus_usable=_cpus(manifest),
        requests=int(report.get("requests") or 0),
        measured_rps=report.get("throughput_rps"),
        workers_cpu_s=per_worker if isinstance(per_worker, Mapping) else None,
        cpu_seconds=_num(window.get("seconds")),
        machine_busy_share=_num(window.get("machine_busy_share")),
        attribution_ms=report.get("attribution_ms"),
        pool_wait_ms=accounting.get("pool_wait_ms"),
        wall_ms=accounting.get("wall_ms"),
        loop_thread_cpu_s=workers.loop_thread_cpu_s,
        worker_requests=workers.requests,
        latency_mean_ms=sum(report["attribution_ms"].values()) if report.get("attribution_ms") else None,
        load_generator_saturated=diagnosis.load_generator_saturated,
        mode=_mode(manifest),
        threads=_int(_dict(manifest.get("server")).get("threads")),
        worker_connections=_worker_connections(run),
    )


def _interface(manifest: Mapping[str, Any], workers: WorkerSummaries) -> str | None:
    value = _dict(manifest.get("server")).get("interface")
    return value if isinstance(value, str) else workers.interface


def _closed_loop_users(report: Mapping[str, Any]) -> int | None:
    """The users of a closed-loop run; None in open loop, where ``users`` is a connection cap."""
    if _dict(report.get("load")).get("model") == "open":
        return None
    return _int(report.get("users"))


def _mode(manifest: Mapping[str, Any]) -> str | None:
    """The worker mode that ran (``server.mode``; ``config.mode`` in older manifests)."""
    for block in ("server", "config"):
        value = _dict(manifest.get(block)).get("mode")
        if isinstance(value, str):
            return value
    return None


def _worker_connections(run: Run) -> int | None:
    """What gevent workers reported as gunicorn's worker_connections (None for other modes)."""
    values = [w.get("worker_connections") for w in run.worker_infos()]
    return next((v for v in values if _int(v)), None)


def _sync_middleware(run: Run) -> list[dict[str, Any]]:
    """The union of the workers' ``middleware`` reports (by path, first report wins, outermost first)."""
    seen: dict[str, dict[str, Any]] = {}
    for info in run.worker_infos():
        entries = info.get("middleware")
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                seen.setdefault(entry["path"], entry)
    return list(seen.values())


def _app_packages(manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The user's packages (``config.app_packages``) plus asyncprof's own target app."""
    packages = _dict(manifest.get("config")).get("app_packages")
    listed = [str(p) for p in packages] if isinstance(packages, list) else []
    return tuple(dict.fromkeys((*DEFAULT_APP_PACKAGES, *listed)))


def _cpus(manifest: Mapping[str, Any]) -> int | None:
    host = _dict(manifest.get("host"))
    return _int(host.get("cpus_usable")) or _int(host.get("cpu_count"))


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None
