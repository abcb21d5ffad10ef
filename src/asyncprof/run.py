"""The run directory: everything one recording produced, plus its manifest.

Layout (all paths relative to the run directory)::

    manifest.json         config, versions, pids, window, instruments, status
    requests.tsv          one line per client request (see asyncprof.loadgen.locustfile)
    locust/stats_*.csv    Locust's own CSV statistics
    spans/<pid>.jsonl     OTLP/JSON lines, one file per worker
    profiles/<trace>.pyisession  pyinstrument sessions of sampled requests
    pyspy/samples.txt     py-spy collapsed stacks (GIL holder per worker)
    pyspy/speedscope.json the same samples for speedscope.app
    workers/<pid>.json    one file per worker that became ready
    logs/*.log            server, Locust and py-spy output

A run is loaded without executing anything from it: JSON and text only.
"""

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from asyncprof.errors import CorruptRunError, RunNotFoundError

MANIFEST = "manifest.json"
DEFAULT_PARENT_ENV = "ASYNCPROF_TRACES_DIR"


def default_parent() -> Path:
    """Where runs go unless ``--out`` says otherwise: ``$ASYNCPROF_TRACES_DIR`` or ``./traces``."""
    return Path(os.environ.get(DEFAULT_PARENT_ENV, "traces"))


@dataclass
class Run:
    """A run directory and its manifest (a plain dict, written atomically)."""

    path: Path
    manifest: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id", self.path.name))

    @property
    def requests_path(self) -> Path:
        return self.path / "requests.tsv"

    @property
    def spans_dir(self) -> Path:
        return self.path / "spans"

    @property
    def profiles_dir(self) -> Path:
        return self.path / "profiles"

    @property
    def pyspy_dir(self) -> Path:
        return self.path / "pyspy"

    @property
    def workers_dir(self) -> Path:
        return self.path / "workers"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @classmethod
    def create(cls, parent: Path, label: str) -> "Run":
        """Make a new, owner-only run directory under *parent* named ``<time>-<label>-<random>``."""
        parent.mkdir(parents=True, exist_ok=True)
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{label}-{secrets.token_hex(2)}"
        path = parent / run_id
        path.mkdir(mode=0o700)
        for sub in ("spans", "profiles", "pyspy", "workers", "logs", "locust", "accounting"):
            (path / sub).mkdir(mode=0o700)
        run = cls(path=path, manifest={"run_id": run_id, "status": "running"})
        run.save()
        return run

    @classmethod
    def load(cls, path: Path) -> "Run":
        """Read the run at *path*; raise CorruptRunError if its manifest is missing or unreadable."""
        manifest_path = path / MANIFEST
        try:
            manifest = orjson.loads(manifest_path.read_bytes())
        except FileNotFoundError:
            raise CorruptRunError(f"{path} has no {MANIFEST}", "is this a run directory?") from None
        except (orjson.JSONDecodeError, OSError) as exc:
            raise CorruptRunError(f"cannot read {manifest_path}: {exc}", "the run directory is damaged") from None
        if not isinstance(manifest, dict):
            raise CorruptRunError(f"{manifest_path} is not a JSON object", "the run directory is damaged")
        return cls(path=path, manifest=manifest)

    def save(self) -> None:
        """Write the manifest atomically (a reader never sees half a file)."""
        tmp = self.path / f".{MANIFEST}.tmp"
        tmp.write_bytes(orjson.dumps(self.manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        os.chmod(tmp, 0o600)
        tmp.replace(self.path / MANIFEST)

    def update(self, **fields: Any) -> None:
        self.manifest.update(fields)
        self.save()

    def worker_infos(self) -> list[dict[str, Any]]:
        """The ready files the workers wrote, unreadable ones skipped."""
        out = []
        for p in sorted(self.workers_dir.glob("*.json")):
            try:
                info = orjson.loads(p.read_bytes())
            except (orjson.JSONDecodeError, OSError):
                continue
            if isinstance(info, dict):
                out.append(info)
        return out


def iter_runs(parent: Path) -> Iterator[Run]:
    """Runs under *parent*, oldest first; directories without a readable manifest are skipped."""
    if not parent.is_dir():
        return
    for path in sorted(p for p in parent.iterdir() if p.is_dir()):
        try:
            yield Run.load(path)
        except CorruptRunError:
            continue


def resolve_run(ref: str | None, parent: Path | None = None) -> Run:
    """Find a run by directory path, by run id under *parent*, or the latest when *ref* is None."""
    parent = parent or default_parent()
    if ref is None:
        runs = [p for p in sorted(parent.iterdir()) if (p / MANIFEST).exists()] if parent.is_dir() else []
        if not runs:
            raise RunNotFoundError(f"no runs under {parent}", "record one with: asyncprof record")
        return Run.load(runs[-1])
    for candidate in (Path(ref), parent / ref):
        if candidate.is_dir():
            return Run.load(candidate)
    raise RunNotFoundError(f"no run {ref!r} (not a directory, nor a run id under {parent})", "list runs with: asyncprof runs")
