"""The report of a run, kept in the run directory so a second ``report`` or ``compare`` is instant.

:func:`cached_report` returns the report stored in ``report.cache.json`` when its key still
matches, else builds it and stores it.  The key covers everything the report is computed from:

* each input file of the run (:data:`INPUTS`): its relative path, size and modification time
  (a run still being recorded, or a file edited or damaged since, changes it);
* the analysis code: a digest of asyncprof's ``analysis`` package sources and its version, so an
  upgrade never serves a report computed by older code.

The cache is plain JSON (orjson), read like every other run file: a corrupt, foreign or
unreadable cache is ignored and rebuilt, never trusted or executed.  A run directory that cannot
be written (someone else's, read-only) still gets its report, just not cached.
"""

import hashlib
import os
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

import asyncprof
from asyncprof.run import MANIFEST, Run

CACHE = "report.cache.json"
#: What a report reads: files, or directories whose every file counts.
INPUTS = (MANIFEST, "requests.tsv", "spans", "accounting", "workers", "pyspy/samples.txt", "profiles", "logs")
_FORMAT = 1


@lru_cache(maxsize=1)
def code_digest() -> str:
    """A digest of the analysis code and asyncprof's version (computed once per process)."""
    digest = hashlib.sha256(f"{asyncprof.__version__}:{_FORMAT}".encode())
    package = Path(asyncprof.__file__).parent
    for path in sorted((package / "analysis").glob("*.py")) + [package / "run.py"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _input_files(run: Run) -> Iterator[Path]:
    for name in INPUTS:
        path = run.path / name
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path


def cache_key(run: Run) -> str:
    """The key a stored report must carry to be reused for *run* as its files are now."""
    digest = hashlib.sha256(code_digest().encode())
    for path in _input_files(run):
        try:
            st = path.stat()
        except OSError:  # vanished while listing: a changing run
            continue
        digest.update(f"{path.relative_to(run.path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached_report(run: Run, build: Callable[[Run], dict[str, Any]]) -> dict[str, Any]:
    """The report of *run*: from ``report.cache.json`` if its key matches, else ``build(run)``, stored."""
    path = run.path / CACHE
    key = cache_key(run)
    try:
        stored = orjson.loads(path.read_bytes())
        if isinstance(stored, dict) and stored.get("key") == key and isinstance(stored.get("report"), dict):
            return stored["report"]
    except (OSError, orjson.JSONDecodeError):
        pass  # no cache yet, or a damaged one: rebuild
    report = build(run)
    tmp = path.with_name(f".{CACHE}.{os.getpid()}.tmp")
    try:
        data = orjson.dumps({"key": key, "report": report}, option=orjson.OPT_NON_STR_KEYS)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # owner-only, like the run's files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except (OSError, TypeError):  # read-only run directory, or a full disk: the report stands uncached
        tmp.unlink(missing_ok=True)
    return report
