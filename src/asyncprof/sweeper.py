"""Run a sweep: every (mode, users) point, repeated, interleaved; then the curves.

Order: for each trial, for each users level, every mode in turn (sync async sync async …), so
slow drift of a noisy machine hits every mode alike.  Each point is an ordinary recording (its
run directory stays under ``out``); the sweep's summary is written to
``<out>/sweep-<timestamp>.json`` as it grows, so an interrupted sweep keeps what it measured.
"""

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from asyncprof.analysis.report import build_report
from asyncprof.analysis.sweep import Trial, summarize_sweep
from asyncprof.config import RecordConfig
from asyncprof.errors import UsageError
from asyncprof.modes import get_mode
from asyncprof.recorder import record

#: The instrument sets a sweep can run with: curves are about throughput, so the default is none.
INSTRUMENTS: dict[str, dict[str, bool]] = {
    "none": {"pyspy": False, "otel": False, "pyinstrument": False, "accounting": False},
    "accounting": {"pyspy": False, "otel": False, "pyinstrument": False, "accounting": True},
    "all": {"pyspy": True, "otel": True, "pyinstrument": True, "accounting": True},
}
ERROR_RATE_LIMIT = 0.01


def plan(modes: Sequence[str], users: Sequence[int], trials: int) -> list[tuple[int, int, str]]:
    """The sweep's recordings in order: (trial, users, mode), modes interleaved at every point."""
    return [(t, u, m) for t in range(trials) for u in users for m in modes]


def sweep(base: RecordConfig, modes: Sequence[str], users: Sequence[int], *, trials: int, slo_p99_ms: float,
          instruments: str = "none", console: Console | None = None) -> tuple[dict[str, Any], Path]:
    """Record every point of the sweep and return its summary and the file it was saved to."""
    console = console or Console(stderr=True)
    if instruments not in INSTRUMENTS:
        raise UsageError(f"unknown instrument set {instruments!r}", f"choose one of: {', '.join(INSTRUMENTS)}")
    if not modes or not users:
        raise UsageError("a sweep needs at least one mode and one users level", "e.g. --modes sync,async --users 10,50")
    if trials < 1:
        raise UsageError("--trials must be at least 1", "e.g. --trials 3")
    for mode in modes:
        get_mode(mode).check_installed()
    for u in users:
        dataclasses.replace(base, users=u).validate()
    base.out.mkdir(parents=True, exist_ok=True)
    path = base.out / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}.json"
    done: list[Trial] = []
    steps = plan(modes, users, trials)
    for i, (trial, u, mode) in enumerate(steps, 1):
        console.print(f"[bold]sweep {i}/{len(steps)}[/]: trial {trial + 1}, {mode}, {u} users")
        config = dataclasses.replace(base, mode=mode, users=u, view=None, **INSTRUMENTS[instruments])
        run = record(config, console=console)
        report = build_report(run)
        error_rate = report.get("error_rate") or 0.0
        done.append(Trial(mode=mode, users=u, run_id=run.run_id, throughput_rps=report["throughput_rps"] or 0.0,
                          p99_ms=report["latency_ms"]["p99"] or 0.0,
                          valid=report.get("valid") is not False and error_rate <= ERROR_RATE_LIMIT))
        summary = summarize_sweep(done, slo_p99_ms)
        summary.update(instruments=instruments, planned=len(steps), recorded=len(done))
        path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary, path
