"""Start the target under a worker mode and wait until every worker is ready."""

import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from asyncprof.calibration import ENV_VAR as CALIBRATE_ENV
from asyncprof.collectors.upstream import ENV_VAR as UPSTREAM_ENV
from asyncprof.errors import ServerError
from asyncprof.modes import Mode, ServerSpec
from asyncprof.processes import ManagedProcess, ProcessGroup
from asyncprof.run import Run
from asyncprof.worker import env as worker_env

READY_TIMEOUT = 60.0


def target_dir() -> Path:
    """The directory holding the ``asyncprof_target`` package (checkout or site-packages)."""
    import asyncprof_target

    return Path(asyncprof_target.__file__).resolve().parent.parent


def worker_environment(run: Run, mode: Mode, *, db_url: str, connect: str, pool_size: int, rows: int,
                       otel: bool, profile_every: int, calibrate: str | None = None,
                       accounting: bool = True, upstream_url: str | None = None) -> dict[str, str]:
    """The environment of the server process: the contract of :mod:`asyncprof.worker.env`.

    Secrets (the database URL, a fresh SECRET_KEY) travel here and only here:
    they are never written to the run directory.  *calibrate* (the canonical
    text of :class:`asyncprof.calibration.Calibration`) becomes
    ``ASYNCPROF_CALIBRATE`` for the calibrate views; when None, any inherited
    ``ASYNCPROF_CALIBRATE`` is removed so the workers do what the manifest says.  *upstream_url*
    (the fanout scenario's upstream service) becomes ``ASYNCPROF_UPSTREAM_URL`` the same way.
    """
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": env.get("DJANGO_SETTINGS_MODULE", "asyncprof_target.settings"),
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": db_url,
            "ASYNCPROF_CONNECT": connect,
            worker_env.INTERFACE: mode.interface,
            "ASYNCPROF_POOL_SIZE": str(pool_size),
            "ASYNCPROF_ROWS": str(rows),
            worker_env.RUN_DIR: str(run.path.resolve()),
            worker_env.RUN_ID: run.run_id,
            worker_env.MODE: mode.name,
            worker_env.OTEL: "1" if otel else "0",
            worker_env.ACCOUNTING: "1" if accounting else "0",
            worker_env.PROFILE_EVERY: str(profile_every),
            worker_env.ANNOUNCE: mode.announce,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(target_dir()), env.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop(worker_env.IGNORE_SIGTERM, None)  # only ever the mode's choice, never inherited
    env.update(mode.worker_env)
    if calibrate is None:
        env.pop(CALIBRATE_ENV, None)
    else:
        env[CALIBRATE_ENV] = calibrate
    if upstream_url is None:
        env.pop(UPSTREAM_ENV, None)
    else:
        env[UPSTREAM_ENV] = upstream_url
    return env


def start_server(group: ProcessGroup, run: Run, mode: Mode, spec: ServerSpec, env: dict[str, str],
                 cpus: Sequence[int] | None = None) -> ManagedProcess:
    """Start *mode*'s server and block until all ``spec.workers`` workers are ready and /health/ answers.

    Raises ServerError (with the end of the server log) if it exits or times out.
    """
    log_path = run.logs_dir / "server.log"
    proc = group.start("server", mode.command(spec), env=env, log_path=log_path, cpus=cpus)
    url = f"http://{spec.host if ':' not in spec.host else f'[{spec.host}]'}:{spec.port}/health/"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not proc.running():
            raise ServerError(f"the {mode.name} server exited during start-up: {_tail(log_path)}",
                              f"full log: {log_path}")
        if len(run.worker_infos()) >= spec.workers and _healthy(url):
            return proc
        time.sleep(0.1)
    raise ServerError(f"the {mode.name} server was not ready within {READY_TIMEOUT:.0f} s: {_tail(log_path)}",
                      f"full log: {log_path}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) if text else "(empty log)"


def python_executable() -> str:
    return sys.executable
