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

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from asyncprof.errors import CorruptRunError, RunNotFoundError, disk_full_error

MANIFEST = "manifest.json"
DEFAULT_PARENT_ENV = "ASYNCPROF_TRACES_DIR"
#: A hidden file holding some disk space while recording (see :meth:`Run.reserve_space`).
RESERVE = ".space-reserve"
RESERVE_BYTES = 128 * 1024


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
        """Read the run at *path*; raise CorruptRunError (one line naming the file and the damage) if its
        manifest is missing, unreadable (not UTF-8, not JSON, truncated) or has a field of the wrong type."""
        manifest_path = path / MANIFEST
        try:
            manifest = orjson.loads(manifest_path.read_bytes())
        except FileNotFoundError:
            raise CorruptRunError(f"{path} has no {MANIFEST}", "is this a run directory?") from None
        except (orjson.JSONDecodeError, OSError) as exc:
            raise CorruptRunError(f"cannot read {manifest_path}: {exc}", "the run directory is damaged") from None
        if not isinstance(manifest, dict):
            raise CorruptRunError(f"{manifest_path} is not a JSON object", "the run directory is damaged")
        problem = manifest_problem(manifest)
        if problem is not None:
            raise CorruptRunError(f"{manifest_path}: {problem}", "the run directory is damaged")
        return cls(path=path, manifest=manifest)

    def save(self) -> None:
        """Write the manifest atomically (a reader never sees half a file).

        No room to write it (disk full, quota, file-size limit) is a DiskFullError, the half-written
        temporary file removed and the previous manifest left as it was.
        """
        tmp = self.path / f".{MANIFEST}.tmp"
        try:
            tmp.write_bytes(orjson.dumps(self.manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            os.chmod(tmp, 0o600)
            tmp.replace(self.path / MANIFEST)
        except OSError as exc:
            full = disk_full_error(exc, self.path / MANIFEST)
            if full is None:
                raise
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise full from None

    def reserve_space(self, nbytes: int = RESERVE_BYTES) -> None:
        """Hold *nbytes* of the disk in a hidden file, so that the final manifest can still be written
        after the run's processes have filled the disk (:meth:`release_space` first)."""
        try:
            (self.path / RESERVE).write_bytes(bytes(nbytes))
        except OSError:
            self.release_space()

    def release_space(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / RESERVE).unlink()

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


_NUMBER = (int, float)
_NONE = type(None)
#: The manifest's sections the readers walk, and the JSON types of the fields they use (a field may
#: be absent; ``NoneType`` listed where null is a value the recorder writes).  Anything else is
#: free-form and only ever printed.
MANIFEST_SHAPE: dict[str, dict[str, tuple[type, ...]]] = {
    "config": {"mode": (str, _NONE), "scenario": (str, _NONE), "view": (str, _NONE), "workers": (int, _NONE),
               "users": (int, _NONE), "warmup": _NUMBER, "rate": (*_NUMBER, _NONE), "duration": (*_NUMBER, _NONE),
               "load_processes": (int, _NONE), "pyspy_rate": (*_NUMBER, _NONE), "app_packages": (list, _NONE),
               "paths": (list, _NONE), "app": (str, _NONE), "locustfile": (str, _NONE)},
    "server": {"interface": (str, _NONE), "mode": (str, _NONE), "host": (str, _NONE), "port": (int, _NONE),
               "threads": (int, _NONE)},
    "host": {"cpu_count": (int, _NONE), "cpus_usable": (int, _NONE)},
    "window": {"start_unix": (*_NUMBER, _NONE), "end_unix": (*_NUMBER, _NONE)},
    "instruments": {},
    "load": {"processes": (int, _NONE), "model": (str, _NONE)},
    "cpu_window": {"workers_cpu_s": (dict, _NONE)},
    "database": {},
}
_INSTRUMENT_SHAPE: dict[str, tuple[type, ...]] = {
    "enabled": (bool, _NONE), "sample_traces": (*_NUMBER, _NONE), "rate_hz": (*_NUMBER, _NONE),
    "error": (str, _NONE),
}
_TOP_SHAPE: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "status": (str, _NONE), "kind": (str, _NONE), "warnings": (list,),
    "connections": (str, _NONE),
}


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", _NONE: "null"}.get(
        type(value), "a number")


def _bad_field(block: Any, shape: dict[str, tuple[type, ...]], where: str) -> str | None:
    for key, types in shape.items():
        if key not in block:
            continue
        value = block[key]
        # bool is an int to Python, not to the manifest: a number field holding true is damage.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return f"{where}{key} is {_type_name(value)}"
    return None


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """Why *manifest* cannot be read as a run's manifest (a field the readers use has the wrong JSON
    type, per :data:`MANIFEST_SHAPE`), or None.  Unknown and absent fields are fine."""
    problem = _bad_field(manifest, _TOP_SHAPE, "")
    if problem is None and isinstance(manifest.get("warnings"), list):
        if not all(isinstance(w, str) for w in manifest["warnings"]):
            problem = "warnings holds something other than text"
    for section, shape in MANIFEST_SHAPE.items():
        if problem is not None:
            break
        if section not in manifest:
            continue
        block = manifest[section]
        if not isinstance(block, dict):
            return f"{section} is {_type_name(block)}, not an object"
        problem = _bad_field(block, shape, f"{section}.")
    if problem is None:
        for name, info in (manifest.get("instruments") or {}).items():
            if not isinstance(info, dict):
                return f"instruments.{name} is {_type_name(info)}, not an object"
            if (problem := _bad_field(info, _INSTRUMENT_SHAPE, f"instruments.{name}.")) is not None:
                break
    return None if problem is None else f"{problem} (wrong type)"


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
