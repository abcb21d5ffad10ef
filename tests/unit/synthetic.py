"""Synthetic run directories for the analysis tests: a manifest, requests.tsv and accounting files.

Nothing here runs a server: the files are written in the formats the recorder and the workers
use (``REQUEST_LOG_HEADER``, ``record_format.COLUMNS``), with values chosen by each test.
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncprof.loadgen.locustfile import REQUEST_LOG_HEADER
from asyncprof.run import Run
from asyncprof.worker.record_format import ACCOUNTING_DIR, COLUMNS

WINDOW = (1000.0, 1010.0)


@dataclass
class Req:
    """One request seen by both sides: the client's line and (unless ``record`` is False) the worker's record."""

    trace_id: str
    latency_ms: float
    name: str = "/items/"
    start: float = 1001.0
    status: int = 200
    error: str = ""
    us: dict[str, int] = field(default_factory=dict)  # record columns (wall_us, cpu_us, hops, ...)
    record: bool = True

    def record_line(self) -> str:
        values = {c: 0 for c in COLUMNS}
        values.update(trace_id=self.trace_id, start_unix=f"{self.start:.6f}", name=self.name, **self.us)
        return "\t".join(str(values[c]) for c in COLUMNS)


def make_run(parent: Path, *, interface: str = "asgi", workers: int = 2, users: int = 10,
             cpus_usable: int = 4, accounting: bool = True, cpu_window: Mapping[str, Any] | None = None,
             **manifest: Any) -> Run:
    """A complete run's manifest with the measured window :data:`WINDOW`."""
    run = Run.create(parent, "test")
    fields: dict[str, Any] = {
        "status": "complete",
        "config": {"mode": "async" if interface == "asgi" else "sync", "scenario": "seed", "view": "async",
                   "workers": workers, "users": users, "warmup": 1.0},
        "server": {"interface": interface},
        "host": {"cpu_count": cpus_usable, "cpus_usable": cpus_usable},
        "window": {"start_unix": WINDOW[0], "end_unix": WINDOW[1]},
        "connections": "one asyncpg pool per worker, at most 10 connections",
        "instruments": {"pyspy": {"enabled": False}, "otel": {"enabled": False},
                        "pyinstrument": {"enabled": False}, "accounting": {"enabled": accounting}},
        "warnings": [],
    }
    if cpu_window is not None:
        fields["cpu_window"] = dict(cpu_window)
    fields.update(manifest)
    run.update(**fields)
    return run


def write_requests(run: Run, requests: Iterable[Req], extra_lines: Iterable[str] = ()) -> None:
    lines = [REQUEST_LOG_HEADER]
    for r in requests:
        lines.append(f"{r.start:.6f}\t{r.name}\t{r.status}\t{r.latency_ms:.3f}\t99\t{r.trace_id}\t{r.error}\n")
    lines += [f"{line}\n" for line in extra_lines]
    run.requests_path.write_text("".join(lines))


def write_records(run: Run, pid: int, requests: Iterable[Req], extra_lines: Iterable[str] = (),
                  header: bool = True) -> Path:
    path = run.path / ACCOUNTING_DIR / f"{pid}.tsv"
    lines = (["\t".join(COLUMNS)] if header else []) + [r.record_line() for r in requests if r.record]
    lines += list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_summary(run: Run, pid: int, **fields: Any) -> None:
    info: dict[str, Any] = {"pid": pid, "interface": "asgi", "loop": "asyncio", "ready_wait_measured": True,
                            "hop_sites": {}, "requests": 0, "hook_cost_us_per_request": None,
                            "loop_thread_cpu_s": None, "steps_cpu_s": None}
    info.update(fields)
    (run.path / ACCOUNTING_DIR / f"{pid}.json").write_text(json.dumps(info))


def trace(i: int) -> str:
    return f"{i:032x}"
