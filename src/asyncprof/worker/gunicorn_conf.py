"""Gunicorn server hooks that install asyncprof's instruments in every worker.

Passed to gunicorn as ``-c python:asyncprof.worker.gunicorn_conf``; bind
address, worker class and count come from the command line the mode registry
builds.  The same hooks run for sync workers and for uvicorn workers.
"""

from typing import Any

from asyncprof.worker import hooks

# Gunicorn's own default; stated so the manifest's command line explains itself.
graceful_timeout = 10


def post_fork(server: Any, worker: Any) -> None:
    hooks.install_tracing()


def post_worker_init(worker: Any) -> None:
    hooks.announce_ready(worker)


def worker_exit(server: Any, worker: Any) -> None:
    hooks.shutdown()
