"""Start the target under a worker mode and wait until every worker is ready."""

import contextlib
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from asyncprof.calibration import ENV_VAR as CALIBRATE_ENV
from asyncprof.collectors.proctree import process_alive
from asyncprof.collectors.upstream import ENV_VAR as UPSTREAM_ENV
from asyncprof.errors import ServerError
from asyncprof.modes import Mode, ServerSpec
from asyncprof.processes import ManagedProcess, ProcessGroup
from asyncprof.run import Run
from asyncprof.worker import env as worker_env

if TYPE_CHECKING:
    from asyncprof.project import Project

READY_TIMEOUT = 60.0
#: After the database is found gone, the run goes on this long (so the report shows what the clients
#: saw when it went), then stops as failed: what it would measure after that is failures only.
DATABASE_LOST_GRACE = 1.0
#: At most one connection probe of the database per this many seconds, and only while requests fail.
DATABASE_PROBE_EVERY = 1.0


class DatabaseLostError(ServerError):
    """The database stopped or became unreachable during the run (exit code 3, like a server that died)."""


def target_dir() -> Path:
    """The directory holding the ``asyncprof_target`` package (checkout or site-packages)."""
    import asyncprof_target

    return Path(asyncprof_target.__file__).resolve().parent.parent


def worker_environment(run: Run, mode: Mode, *, db_url: str, connect: str, pool_size: int, rows: int,
                       otel: bool, profile_every: int, calibrate: str | None = None,
                       accounting: bool = True, upstream_url: str | None = None,
                       project: "Project | None" = None) -> dict[str, str]:
    """The environment of the server process: the contract of :mod:`asyncprof.worker.env`.

    Secrets (the database URL, a fresh SECRET_KEY) travel here and only here:
    they are never written to the run directory.  *calibrate* (the canonical
    text of :class:`asyncprof.calibration.Calibration`) becomes
    ``ASYNCPROF_CALIBRATE`` for the calibrate views; when None, any inherited
    ``ASYNCPROF_CALIBRATE`` is removed so the workers do what the manifest says.  *upstream_url*
    (the fanout scenario's upstream service) becomes ``ASYNCPROF_UPSTREAM_URL`` the same way.
    With *project* (``--app``) the workers serve the user's application instead of the target: its
    directory leads ``PYTHONPATH``, its settings module and the database's ``PG*`` variables are set.
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
    if project is not None:
        env.update(project.environment(db_url))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project.dir), os.environ.get("PYTHONPATH")]))
        if project.wsgi:
            env[worker_env.WSGI_APP] = project.wsgi
        if project.asgi:
            env[worker_env.ASGI_APP] = project.asgi
    else:
        env.pop(worker_env.WSGI_APP, None)
        env.pop(worker_env.ASGI_APP, None)
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
                 cpus: Sequence[int] | None = None, cwd: Path | None = None,
                 ready_path: str | None = None) -> ManagedProcess:
    """Start *mode*'s server and block until all ``spec.workers`` workers are ready and it answers HTTP.

    The target must answer ``/health/`` with 200; with *ready_path* (a user's project, whose pages
    asyncprof does not know) any HTTP answer on that path will do.  Raises ServerError (with the end
    of the server log) if it exits or times out.
    """
    log_path = run.logs_dir / "server.log"
    proc = group.start("server", mode.command(spec), env=env, log_path=log_path, cpus=cpus, cwd=cwd)
    host = spec.host if ":" not in spec.host else f"[{spec.host}]"
    url = f"http://{host}:{spec.port}{ready_path or '/health/'}"
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not proc.running():
            raise ServerError(f"the {mode.name} server exited during start-up: {_tail(log_path)}",
                              f"full log: {log_path}")
        if len(run.worker_infos()) >= spec.workers and _healthy(url, any_status=ready_path is not None):
            return proc
        time.sleep(0.1)
    raise ServerError(f"the {mode.name} server was not ready within {READY_TIMEOUT:.0f} s: {_tail(log_path)}",
                      f"full log: {log_path}")


def _healthy(url: str, any_status: bool = False) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bool(resp.status == 200) or any_status
    except urllib.error.HTTPError:  # an answer all the same (a 404 or a redirect loop)
        return any_status
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) if text else "(empty log)"


class ServerWatch:
    """Follows the server's workers and the database while the load runs; :meth:`check` every tick.

    * A worker that dies (killed, crashed, timed out by its master) is a ``worker_died`` entry in the
      manifest's ``faults``: its pid, when it was found gone (``unix``) and, once its master has started
      another (a new ``workers/<pid>.json``), ``replaced_by`` and ``replacement_ready_unix`` (from its
      file).  New workers join ``pids.workers``, so the CPU snapshot and the checks for leftovers know
      them, and the recorder starts a py-spy on each (:class:`~asyncprof.collectors.pyspy.PySpies`).  The signal or exit code
      is read from the server's log by the report (gunicorn: ``Worker (pid:N) was sent SIGKILL!``).
    * The database: the embedded server's postmaster must stay alive; any database is probed with one
      connection (at most once a second) while requests fail.  Gone, it is a ``database_lost`` fault,
      and :data:`DATABASE_LOST_GRACE` later the run stops with :class:`DatabaseLostError`.
    * The server master itself exiting is a :class:`ServerError`, as before.
    """

    def __init__(self, run: Run, server: ManagedProcess, *, db_url: str | None = None,
                 postmaster: int | None = None) -> None:
        self.run, self.server = run, server
        self.db_url, self.postmaster = db_url, postmaster
        self.known: set[int] = {int(w["pid"]) for w in run.worker_infos() if isinstance(w.get("pid"), int)}
        self.gone: set[int] = set()
        self.db_lost_at: float | None = None
        self.db_lost_detail = ""
        self._errors = 0
        self._next_probe = 0.0
        if postmaster is not None and isinstance(run.manifest.get("database"), dict):
            run.manifest["database"]["pid"] = postmaster
        # Present even when empty: the report then knows the run was watched, and that a worker the
        # server log says died outside the watch (while the server stopped) is no fault of the run.
        run.manifest.setdefault("faults", [])

    @property
    def faults(self) -> list[dict[str, object]]:
        faults = self.run.manifest.setdefault("faults", [])
        return faults if isinstance(faults, list) else []

    def check(self, now: float, errors: int = 0) -> None:
        """Raise ServerError if the master exited, DatabaseLostError once the database is gone (after the
        grace); otherwise note dead and new workers.  *errors* is how many requests failed so far."""
        if not self.server.running():
            raise ServerError("the server exited during the run", f"see {self.run.logs_dir / 'server.log'}")
        changed = self._workers(now)
        changed = self._database(now, errors) or changed
        if changed:
            self.run.save()
        if self.db_lost_at is not None and now - self.db_lost_at >= DATABASE_LOST_GRACE:
            window = self.run.manifest.get("window") or {}
            start = window.get("start_unix") if isinstance(window, dict) else None
            when = (f" {self.db_lost_at - start:.1f} s into the measured window"
                    if isinstance(start, (int, float)) and self.db_lost_at >= start else "")
            raise DatabaseLostError(f"the database stopped during the run{when}: {self.db_lost_detail}",
                                    "what was recorded until then is kept, and asyncprof report reads it")

    def _workers(self, now: float) -> bool:
        changed = False
        for pid in sorted(self.known - self.gone):
            if not process_alive(pid):
                self.gone.add(pid)
                self.faults.append({"kind": "worker_died", "pid": pid, "unix": round(now, 3),
                                    "replaced_by": None, "replacement_ready_unix": None})
                changed = True
        try:
            names = os.listdir(self.run.workers_dir)
        except OSError:
            return changed
        new = sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()
                     and int(n[:-5]) not in self.known)
        infos = {int(w["pid"]): w for w in self.run.worker_infos() if isinstance(w.get("pid"), int)} if new else {}
        for pid in new:
            if pid not in infos:  # not readable yet: next tick
                continue
            self.known.add(pid)
            pids = self.run.manifest.setdefault("pids", {})
            pids.setdefault("workers", [])
            if pid not in pids["workers"]:
                pids["workers"].append(pid)
            pending = next((f for f in self.faults if f.get("kind") == "worker_died" and f.get("replaced_by") is None),
                           None)
            if pending is not None:
                pending["replaced_by"] = pid
                pending["replacement_ready_unix"] = infos[pid].get("ready_unix")
            else:
                self.faults.append({"kind": "worker_started", "pid": pid, "unix": round(now, 3),
                                    "ready_unix": infos[pid].get("ready_unix")})
            changed = True
        return changed

    def _database(self, now: float, errors: int) -> bool:
        if self.db_lost_at is not None:
            return False
        detail = None
        if self.postmaster is not None and not process_alive(self.postmaster):
            detail = f"the embedded PostgreSQL (postmaster pid {self.postmaster}) exited"
        elif self.db_url and errors > self._errors and now >= self._next_probe:
            self._next_probe = now + DATABASE_PROBE_EVERY
            detail = _probe_database(self.db_url)
            if detail is not None and self.postmaster is not None:  # shutting down, say
                detail = f"the embedded PostgreSQL (postmaster pid {self.postmaster}) refuses connections: {detail}"
        self._errors = errors
        if detail is None:
            return False
        self.db_lost_at, self.db_lost_detail = now, detail
        self.faults.append({"kind": "database_lost", "unix": round(now, 3), "detail": detail})
        return True


def _probe_database(url: str) -> str | None:
    """Why a new connection to *url* fails when the database is gone, None when it answers (or is
    merely full: too many clients is overload, not a lost database)."""
    import psycopg2

    from asyncprof.database import redact

    try:
        conn = psycopg2.connect(url, connect_timeout=1)
    except psycopg2.Error as exc:
        text = str(exc).strip()
        if "too many clients" in text or "remaining connection slots" in text:
            return None
        first = text.splitlines()[0] if text else type(exc).__name__
        return f"cannot connect to PostgreSQL at {redact(url)}: {first}"
    with contextlib.suppress(psycopg2.Error):
        conn.close()
    return None


def python_executable() -> str:
    return sys.executable
