"""Gunicorn server hooks that install asyncprof's instruments in every worker.

Passed to gunicorn as ``-c python:asyncprof.worker.gunicorn_conf``; bind
address, worker class and count come from the command line the mode registry
builds.  The same hooks run for sync workers and for uvicorn workers.
"""

from __future__ import annotations

from typing import Any

from asyncprof.worker import hooks

# Gunicorn's own default; stated so the manifest's command line explains itself.
graceful_timeout = 10
# gunicorn >= 24 opens a control socket under ~/.gunicorn by default: a measuring run must not
# leave a control channel into the user's home directory (older gunicorns ignore the setting).
control_socket_disable = True


def post_fork(server: Any, worker: Any) -> None:
    hooks.managed_by_gunicorn()
    hooks.patch_gevent_first(worker)
    hooks.install_tracing()
    hooks.install_accounting()
    hooks.flush_at_server_shutdown()


def post_worker_init(worker: Any) -> None:
    hooks.announce_ready(worker)


def worker_exit(server: Any, worker: Any) -> None:
    hooks.shutdown()
