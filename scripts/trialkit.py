"""Shared machinery of the trial scripts in this directory (``bench-accounting``; ``trials`` can use it).

Importable because a script run as ``scripts/<name>`` has ``scripts/`` first on ``sys.path``.
One recording becomes one flat dict of figures (:func:`run_trial`), read from the run
directory only: the client's requests through :func:`asyncprof.analysis.summary.summarize`
(the same figures ``scripts/trials`` prints), the workers' kernel-measured CPU from the
manifest's ``cpu_window``, and the accounting's own cost estimate from
``accounting/<pid>.json``.  A recording that fails is a dict with ``error`` instead, so a long
benchmark goes on and reports what it measured.
"""

import json
import os
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console

from asyncprof.analysis.instrument_cost import instrument_cost
from asyncprof.analysis.summary import summarize
from asyncprof.config import RecordConfig
from asyncprof.errors import AsyncprofError, Interrupted
from asyncprof.recorder import record
from asyncprof.run import Run
from asyncprof.worker.record_format import ACCOUNTING_DIR


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """Median, min and max of the values that are not None (None when there are none)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": round(statistics.median(vals), 4), "min": round(min(vals), 4), "max": round(max(vals), 4),
            "n": len(vals)}


def fmt(s: dict[str, float] | None, digits: int = 0, signed: bool = False) -> str:
    """``median [min–max]`` (``[min to max]`` for signed figures), or ``–`` when there is nothing."""
    if s is None:
        return "–"
    spec = f"{'+' if signed else ''}.{digits}f"
    median, low, high = (format(s[k], spec) for k in ("median", "min", "max"))
    if s["n"] == 1:
        return median
    return f"{median} [{low} to {high}]" if signed else f"{median} [{low}–{high}]"


def worker_cpu_ms_per_request(manifest: dict[str, Any], throughput_rps: float | None) -> float | None:
    """The workers' CPU (all threads, kernel accounting) per request in the measured window, ms."""
    window = manifest.get("cpu_window") or {}
    per_worker = window.get("workers_cpu_s") or {}
    seconds = window.get("seconds")
    used = [v for v in per_worker.values() if v is not None]
    if not used or len(used) < len(per_worker) or not seconds or not throughput_rps:
        return None  # a worker that died mid-window would make the figure wrong
    return 1000 * sum(used) / (throughput_rps * seconds)


def pyspy_cpu_ms_per_request(manifest: dict[str, Any], requests: int | None) -> float | None:
    """py-spy's CPU (kernel accounting) per request in the measured window, ms; None without py-spy."""
    window = manifest.get("cpu_window") or {}
    cpu = window.get("pyspy_cpu_s")
    if cpu is None or not requests:
        return None
    return 1000 * cpu / requests


def accounting_summaries(run_path: Path) -> list[dict[str, Any]]:
    """The workers' ``accounting/<pid>.json`` files, unreadable ones skipped."""
    out = []
    for p in sorted((run_path / ACCOUNTING_DIR).glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out.append(data)
    return out


def weighted_estimate(summaries: list[dict[str, Any]], key: str) -> float | None:
    """A per-request figure of the workers' summaries, averaged over all their requests."""
    pairs = [(s[key], s.get("requests") or 0) for s in summaries if s.get(key) is not None]
    total = sum(n for _, n in pairs)
    return round(sum(v * n for v, n in pairs) / total, 1) if total else None


def run_trial(config: RecordConfig, console: Console) -> dict[str, Any]:
    """Record one run; its figures, or ``{"error": ...}`` if it failed (Interrupted propagates)."""
    try:
        run = record(config, console=console)
    except Interrupted:
        raise
    except AsyncprofError as exc:
        console.print(f"[red]trial failed:[/] {exc}")
        return {"error": str(exc), "run_path": str(exc.run_path) if exc.run_path else None}
    return run_figures(run)


def run_figures(run: Run) -> dict[str, Any]:
    """The figures of one recorded run (see :func:`run_trial`)."""
    summary = summarize(run)
    rps = summary["throughput_rps"]
    accounting = accounting_summaries(run.path)
    cost = instrument_cost(run.manifest, run.worker_infos(), accounting, summary["requests"])
    return {
        "run_id": run.run_id,
        "run_path": str(run.path),
        "throughput_rps": rps,
        "requests": summary["requests"],
        "errors": summary["errors"],
        "p50_ms": summary["latency_ms"].get("p50"),
        "p99_ms": summary["latency_ms"].get("p99"),
        "worker_cpu_ms_per_request": worker_cpu_ms_per_request(run.manifest, rps),
        "pyspy_cpu_ms_per_request": pyspy_cpu_ms_per_request(run.manifest, summary["requests"]),
        "machine_busy_share": (run.manifest.get("cpu_window") or {}).get("machine_busy_share"),
        "accounting_workers": len(accounting),
        "hook_cost_us_per_request": weighted_estimate(accounting, "hook_cost_us_per_request"),
        "loop_hooks_us_per_request": weighted_estimate(accounting, "loop_hooks_us_per_request"),
        # The instruments' own CPU as the run measured it (the report's instrument_cost).
        "pyspy_machine_share": cost["pyspy_machine_share"],
        "instruments_us_per_request": cost["workers_us_per_request"],
        "instruments_worker_cpu_share": cost["workers_cpu_share"],
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: an interrupted benchmark leaves its last complete file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)
