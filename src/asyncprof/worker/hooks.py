"""Install and tear down the in-worker instruments.

Call order in a gunicorn worker (see :mod:`asyncprof.worker.gunicorn_conf`):
``install_tracing`` after fork, ``prepare_django`` + ``wrap_*`` when the
application module is imported, ``announce_ready`` once the app is loaded,
``shutdown`` when the worker exits (flushes spans).
"""

import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from asyncprof.worker.env import WorkerEnv

ENV = WorkerEnv.read()
_provider: Any = None


def _run_path(*parts: str) -> Path | None:
    return Path(ENV.run_dir, *parts) if ENV.run_dir else None


def install_tracing() -> None:
    """Set up the OTel SDK for this worker process: file export, plus OTLP/HTTP if configured.

    Must run after fork (the batch processor owns a thread) and before the
    database drivers are first used (the instrumentors patch them).
    """
    global _provider
    if not ENV.otel or _provider is not None:
        return
    from opentelemetry import trace
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from asyncprof.worker.otlp_file import OtlpJsonFileExporter

    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", "asyncprof-target"),
            "process.pid": os.getpid(),
            "asyncprof.mode": ENV.mode,
            "asyncprof.run_id": ENV.run_id,
        }
    )
    provider = TracerProvider(resource=resource)
    spans_path = _run_path("spans", f"{os.getpid()}.jsonl")
    if spans_path is not None:
        # A large queue so a 1,000 req/s worker never drops spans between batches.
        provider.add_span_processor(
            BatchSpanProcessor(
                OtlpJsonFileExporter(spans_path),
                max_queue_size=65536,
                max_export_batch_size=2048,
                schedule_delay_millis=1000,
            )
        )
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), max_queue_size=65536))
    trace.set_tracer_provider(provider)
    Psycopg2Instrumentor().instrument(skip_dep_check=True)
    AsyncPGInstrumentor().instrument(skip_dep_check=True)
    _provider = provider


def install_accounting() -> None:
    """Start the per-request accounting (after fork, before the app is loaded and wrapped)."""
    if ENV.accounting:
        from asyncprof.worker import accounting

        accounting.install(ENV.run_dir, interface=ENV.interface, otel=ENV.otel)


def prepare_django() -> None:
    """Put the profiling middleware first in the user's MIDDLEWARE, without editing their settings."""
    if ENV.profile_every <= 0:
        return
    from django.conf import settings

    name = "asyncprof.worker.profiling.profile_middleware"
    if name not in settings.MIDDLEWARE:
        settings.MIDDLEWARE = [name, *settings.MIDDLEWARE]


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` and return the attribute."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "application")


def wrap_wsgi(app: Any) -> Any:
    """Wrap a WSGI app in the accounting, then in OTel's WSGI middleware (a server span per request).

    OTel is outermost so that its span is current while the accounting runs and can carry the
    request's breakdown as attributes.
    """
    if ENV.accounting:
        from asyncprof.worker import accounting

        app = accounting.wrap_wsgi(app)
    if not ENV.otel:
        return app
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app)


def wrap_asgi(app: Any) -> Any:
    """Wrap an ASGI app in OTel's ASGI middleware.

    This sits outside Django on purpose: OTel's Django middleware is sync-only,
    so under ASGI Django would run it through sync_to_async and add two
    thread hops to every request, the very cost we are trying to measure.
    The per-message receive/send spans are excluded for the same reason.
    The accounting sits inside it, as under WSGI.
    """
    if ENV.accounting:
        from asyncprof.worker import accounting

        app = accounting.wrap_asgi(app)
    if not ENV.otel:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(app, exclude_spans=["receive", "send"])


def _describe_server(worker: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"worker_class": type(worker).__name__}
    config = getattr(worker, "config", None)  # uvicorn workers carry a uvicorn Config
    if config is not None:
        loop, http = getattr(config, "loop", "auto"), getattr(config, "http", "auto")
        if loop == "auto":
            loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        if http == "auto":
            http = "httptools" if importlib.util.find_spec("httptools") else "h11"
        info.update(loop=loop, http=http if isinstance(http, str) else type(http).__name__)
    return info


def announce_ready(worker: Any) -> None:
    """Write ``workers/<pid>.json``: the recorder waits for one per worker before load starts."""
    path = _run_path("workers", f"{os.getpid()}.json")
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "ready_unix": time.time(),
        "python": sys.version.split()[0],
        **_describe_server(worker),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)


def flush_at_server_shutdown() -> None:
    """Make uvicorn's server flush the instruments as it finishes shutting down.

    uvicorn re-raises the SIGTERM it caught once it has shut down, so a uvicorn worker dies by
    that signal and gunicorn's ``worker_exit`` hook never runs in it.
    """
    try:
        from uvicorn.server import Server
    except ImportError:
        return
    if getattr(Server.shutdown, "_asyncprof", False):
        return
    original = Server.shutdown

    async def shutdown_then_flush(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await original(self, *args, **kwargs)
        finally:
            shutdown()

    shutdown_then_flush._asyncprof = True  # type: ignore[attr-defined]
    Server.shutdown = shutdown_then_flush  # type: ignore[method-assign]


def shutdown() -> None:
    """Write the accounting's last records, flush and close the span exporters; at worker exit."""
    global _provider
    if ENV.accounting:
        from asyncprof.worker import accounting

        accounting.close()
    if _provider is not None:
        _provider.shutdown()
        _provider = None
