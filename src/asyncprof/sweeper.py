"""Run a sweep: every (mode, load level) point, repeated, interleaved; then the curves.

A load level is a number of users (closed loop) or, with ``rates``, an arrival rate (open loop).
Order: for each trial, for each load level, every mode in turn (sync async sync async …), so
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


def plan(modes: Sequence[str], levels: Sequence[float], trials: int) -> list[tuple[int, float, str]]:
    """The sweep's recordings in order: (trial, level, mode), modes interleaved at every point."""
    return [(t, u, m) for t in range(trials) for u in levels for m in modes]


def sweep(base: RecordConfig, modes: Sequence[str], users: Sequence[int], *, trials: int, slo_p99_ms: float,
          instruments: str = "none", rates: Sequence[float] | None = None,
          console: Console | None = None) -> tuple[dict[str, Any], Path]:
    """Record every point of the sweep and return its summary and the file it was saved to.

    With *rates*, the levels are open-loop arrival rates and *users* must hold one value: the
    connections per load process at every rate.
    """
    console = console or Console(stderr=True)
    if instruments not in INSTRUMENTS:
        raise UsageError(f"unknown instrument set {instruments!r}", f"choose one of: {', '.join(INSTRUMENTS)}")
    if not modes or not users:
        raise UsageError("a sweep needs at least one mode and one users level", "e.g. --modes sync,async --users 10,50")
    if trials < 1:
        raise UsageError("--trials must be at least 1", "e.g. --trials 3")
    if rates is not None and len(users) != 1:
        raise UsageError("with --rate, --users is the connections per load process: give one value",
                         "e.g. --rate 100,200,400 --users 100")
    for mode in modes:
        get_mode(mode).check_installed()
    for u in users:
        dataclasses.replace(base, users=u).validate()
    for r in rates or ():
        dataclasses.replace(base, users=users[0], rate=r).validate()
    levels: Sequence[float] = rates if rates is not None else users
    base.out.mkdir(parents=True, exist_ok=True)
    path = base.out / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}.json"
    done: list[Trial] = []
    steps = plan(modes, levels, trials)
    for i, (trial, level, mode) in enumerate(steps, 1):
        if rates is not None:
            label, u, rate = f"{level:g} req/s offered", users[0], float(level)
        else:
            label, u, rate = f"{level:g} users", int(level), None
        console.print(f"[bold]sweep {i}/{len(steps)}[/]: trial {trial + 1}, {mode}, {label}")
        config = dataclasses.replace(base, mode=mode, users=u, rate=rate, view=None, **INSTRUMENTS[instruments])
        run = record(config, console=console)
        report = build_report(run)
        error_rate = report.get("error_rate") or 0.0
        done.append(Trial(mode=mode, users=u, rate=rate, run_id=run.run_id, throughput_rps=report["throughput_rps"] or 0.0,
                          p99_ms=report["latency_ms"]["p99"] or 0.0,
                          valid=report.get("valid") is not False and error_rate <= ERROR_RATE_LIMIT))
        summary = summarize_sweep(done, slo_p99_ms)
        summary.update(instruments=instruments, planned=len(steps), recorded=len(done))
        path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary, path
