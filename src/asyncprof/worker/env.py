"""The environment contract between ``asyncprof record`` and its workers.

The recorder sets these variables; the worker hooks read them once, at
import.  They are the only channel between the two, so a user can also start
a server by hand with the same variables and get the same instruments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

RUN_DIR = "ASYNCPROF_RUN_DIR"
RUN_ID = "ASYNCPROF_RUN_ID"
MODE = "ASYNCPROF_MODE"
OTEL = "ASYNCPROF_OTEL"
PROFILE_EVERY = "ASYNCPROF_PROFILE_EVERY"
WSGI_APP = "ASYNCPROF_WSGI_APP"
ASGI_APP = "ASYNCPROF_ASGI_APP"
ACCOUNTING = "ASYNCPROF_ACCOUNTING"
INTERFACE = "ASYNCPROF_INTERFACE"
#: When a worker not run by gunicorn writes ``workers/<pid>.json``: ``lifespan`` (ASGI lifespan
#: startup) or ``import`` (when the application module is imported; the default).
ANNOUNCE = "ASYNCPROF_ANNOUNCE"
#: "1": each worker process serves one request at a time on one thread (gunicorn's sync worker), so
#: process-wide hooks may be switched per request.  Set by the mode's registry entry.
ONE_AT_A_TIME = "ASYNCPROF_ONE_REQUEST_AT_A_TIME"
#: "1": the worker ignores SIGTERM (its server stops it by other means; see the hypercorn mode).
IGNORE_SIGTERM = "ASYNCPROF_IGNORE_SIGTERM"


@dataclass(frozen=True)
class WorkerEnv:
    """What the worker hooks need to know, parsed from the environment."""

    run_dir: str | None
    run_id: str
    mode: str
    otel: bool
    profile_every: int
    wsgi_app: str
    asgi_app: str
    accounting: bool
    interface: str
    announce: str = "import"
    ignore_sigterm: bool = False
    one_at_a_time: bool = False

    @classmethod
    def read(cls) -> "WorkerEnv":
        return cls(
            run_dir=os.environ.get(RUN_DIR) or None,
            run_id=os.environ.get(RUN_ID, ""),
            mode=os.environ.get(MODE, ""),
            otel=os.environ.get(OTEL, "0") == "1",
            profile_every=int(os.environ.get(PROFILE_EVERY, "0") or 0),
            wsgi_app=os.environ.get(WSGI_APP, "asyncprof_target.wsgi:application"),
            asgi_app=os.environ.get(ASGI_APP, "asyncprof_target.asgi:application"),
            accounting=os.environ.get(ACCOUNTING, "0") == "1",
            interface=os.environ.get(INTERFACE, ""),
            announce=os.environ.get(ANNOUNCE, "import") or "import",
            ignore_sigterm=os.environ.get(IGNORE_SIGTERM, "0") == "1",
            one_at_a_time=os.environ.get(ONE_AT_A_TIME, "0") == "1",
        )
