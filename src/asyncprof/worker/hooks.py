"""Install and tear down the in-worker instruments.

Call order in a gunicorn worker (see :mod:`asyncprof.worker.gunicorn_conf`):
``install_tracing`` after fork, ``prepare_django`` + ``wrap_*`` when the
application module is imported, ``announce_ready`` once the app is loaded,
``shutdown`` when the worker exits (flushes spans).

Every other server (uvicorn, hypercorn, daphne, granian) has no such hooks, but
imports the application module in each worker process: there
:func:`install_standalone` installs the same instruments first and arranges
the flush at exit (ASGI lifespan shutdown, uvicorn's ``Server.shutdown``,
``atexit`` and multiprocessing's exit finalizers, whichever comes first), and
the worker announces itself at lifespan startup or at import
(:data:`asyncprof.worker.env.ANNOUNCE`); see :func:`serve_standalone_asgi`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import importlib.util
import json
import multiprocessing.util
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from asyncprof.worker.env import WorkerEnv

ENV = WorkerEnv.read()
_provider: Any = None
_managed = False  # gunicorn's post_fork hook installed the instruments in this process
_standalone = False  # install_standalone() did
_closed = False
_info: dict[str, Any] = {}  # this worker's workers/<pid>.json, as last written
_span_counters: Any = None  # (EndedSpans, file CountingExporter | None, live CountingExporter | None)
#: Requests outside the sample run without a suppressing OTel context (see install_tracing).
_no_context_outside = False
#: Servers asyncprof knows, by the module each one's workers have imported (first match wins).
SERVERS = ("granian", "hypercorn", "daphne", "uvicorn", "gunicorn")


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
    from asyncprof.worker.span_counts import CountingExporter, EndedSpans

    global _span_counters, _no_context_outside
    sampler = _request_sampler()
    provider = TracerProvider(resource=resource, **({"sampler": sampler} if sampler is not None else {}))
    # With asyncprof's sampler, requests outside the sample need no suppressing context where the
    # database instrumentations are switched (one request at a time) or gated (ASGI).
    _no_context_outside = sampler is not None and (ENV.one_at_a_time or ENV.interface == "asgi")
    ended, file_exporter, live_counter = EndedSpans(), None, None
    provider.add_span_processor(ended)
    spans_path = _run_path("spans", f"{os.getpid()}.jsonl")
    if spans_path is not None:
        file_exporter = CountingExporter(OtlpJsonFileExporter(spans_path))
        # A large queue so a 1,000 req/s worker never drops spans between batches.
        provider.add_span_processor(
            BatchSpanProcessor(
                file_exporter,
                max_queue_size=65536,
                max_export_batch_size=2048,
                schedule_delay_millis=1000,
            )
        )
    from asyncprof.exporters.otlp_env import live_exporter

    # OTLP as the OTEL_EXPORTER_OTLP_* variables say (http/protobuf or grpc), secrets masked first.
    if (live := live_exporter()) is not None:
        live_counter = CountingExporter(live)
        provider.add_span_processor(BatchSpanProcessor(live_counter, max_queue_size=65536))
    _span_counters = (ended, file_exporter, live_counter)
    trace.set_tracer_provider(provider)
    Psycopg2Instrumentor().instrument(skip_dep_check=True)
    with _switched_with_sampled_requests(_asyncpg_classes()):
        AsyncPGInstrumentor().instrument(skip_dep_check=True)
    if ENV.one_at_a_time or _no_context_outside:
        import psycopg2

        from asyncprof.worker import switches
        from asyncprof.worker.sampling import in_traced_request

        # One request at a time: plain cursors outside the sample (see wrap_wsgi); else, under
        # ASGI, cursors that take the traced way only inside a sampled request (see wrap_asgi).
        switches.track_psycopg2_connections(psycopg2, gate=None if ENV.one_at_a_time else in_traced_request)
    _provider = provider


def _request_sampler() -> Any:
    """asyncprof's sampler (:func:`asyncprof.worker.sampling.request_sampler`) at the rate the
    recorder set, or None when the OTel variables ask for another sampler (then that one is used,
    and requests outside the sample get a suppressing context as before)."""
    if os.environ.get("OTEL_TRACES_SAMPLER") != "parentbased_traceidratio":
        return None
    from asyncprof.worker.sampling import request_sampler

    try:
        ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
    except ValueError:
        return None
    return request_sampler(ratio) if 0.0 <= ratio <= 1.0 else None


def _asyncpg_classes() -> list[type]:
    """The asyncpg classes OTel's instrumentation wraps methods of (none without asyncpg)."""
    try:
        import asyncpg.connection
        import asyncpg.cursor
    except ImportError:
        return []
    return [asyncpg.connection.Connection, asyncpg.cursor.Cursor, asyncpg.cursor.CursorIterator]


@contextlib.contextmanager
def _switched_with_sampled_requests(classes: list[type]) -> Iterator[None]:
    """Under ASGI, make the methods of *classes* wrapped inside the block wrapped only while a
    sampled request is in flight (:func:`asyncprof.worker.loop_hooks.switch_with_timed_requests`).

    OTel's asyncpg wrappers consult the context at every query, and a suppressed one (a request
    outside the sample) still costs their call and an extra coroutine frame: about 1 % of an ASGI
    request's instructions (``scripts/count-instructions``).  Between sampled requests the
    classes are left as asyncpg made them; while one is in flight, the others take the
    suppressed way as before.  Under WSGI the wrappers stay (no loop says when a request runs).
    """
    before = [(cls, dict(vars(cls))) for cls in classes] if ENV.interface == "asgi" else []
    yield
    from asyncprof.worker import loop_hooks
    from asyncprof.worker.sampling import in_traced_request
    from asyncprof.worker.switches import gated_method

    for cls, own in before:
        for name, value in list(vars(cls).items()):
            if name in own and own[name] is not value:
                setattr(cls, name, own[name])
                # Without a suppressing context outside the sample, the wrappers are gated too:
                # a request outside the sample that overlaps a sampled one calls asyncpg directly.
                wrapper = gated_method(own[name], value, in_traced_request) if _no_context_outside else value
                loop_hooks.switch_with_timed_requests(cls, name, wrapper)


def install_accounting() -> None:
    """Start the per-request accounting (after fork, before the app is loaded and wrapped)."""
    if ENV.accounting:
        from asyncprof.worker import accounting

        accounting.install(ENV.run_dir, interface=ENV.interface, otel=ENV.otel,
                           one_request_at_a_time=ENV.one_at_a_time)


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
    from opentelemetry import context
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    from asyncprof.worker.sampling import sampled, unsampled_context

    from asyncprof.worker import switches

    traced = OpenTelemetryMiddleware(app)
    # The accounting's short way, when it is there (it switches too, see below); else the app.
    outside = getattr(app, "outside_sample", app)
    # One request at a time: its connections' cursors follow its sample state (switches).
    follow = switches.follow if ENV.one_at_a_time else None
    follow_outside = follow if outside is app else None

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        traceparent = environ.get("HTTP_TRACEPARENT")
        if sampled(traceparent):
            if follow is not None:
                follow(True)
            return traced(environ, start_response)
        if follow_outside is not None:
            follow_outside(False)
        if _no_context_outside:  # its cursors are plain (switched): nothing to suppress
            return outside(environ, start_response)
        # Detached as the app returns: left attached, its span would be the parent of the thread's
        # next request (OTel's middleware then makes an internal span, not a server span).  A
        # query made while the server iterates the body is outside it and starts a root span,
        # which the trace-id rule samples as any other root.
        token = context.attach(unsampled_context(traceparent))
        try:
            return outside(environ, start_response)
        finally:
            context.detach(token)

    return application


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
    from opentelemetry import context
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from asyncprof.worker import loop_hooks
    from asyncprof.worker.sampling import sampled, unsampled_context

    traced = OpenTelemetryMiddleware(app, exclude_spans=["receive", "send"])
    # The accounting's short way, when it is there; else the app itself (both return an awaitable).
    outside = getattr(app, "outside_sample", app)

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":  # lifespan (for the worker's life), websockets: no request
            return await traced(scope, receive, send)
        traceparent = next((v for k, v in scope.get("headers", ()) if k == b"traceparent"), None)
        if sampled(traceparent):
            loop_hooks.follow()  # the database spans' wrappers are on (see _switched_with_sampled_requests)
            try:
                return await traced(scope, receive, send)
            finally:
                loop_hooks.unfollow()
        if _no_context_outside:  # its database calls are gated (install_tracing): nothing to suppress
            return await outside(scope, receive, send)
        token = context.attach(unsampled_context(traceparent))
        try:
            return await outside(scope, receive, send)
        finally:
            context.detach(token)

    return application


def _describe_server(worker: Any) -> dict[str, Any]:
    if worker is None:
        return _describe_standalone()
    info: dict[str, Any] = {"server": "gunicorn", "worker_class": type(worker).__name__}
    cfg = getattr(worker, "cfg", None)
    if info["worker_class"] == "ThreadWorker" and cfg is not None:
        info["threads"] = cfg.threads
    elif info["worker_class"] == "GeventWorker" and cfg is not None:
        info["worker_connections"] = cfg.worker_connections
    config = getattr(worker, "config", None)  # uvicorn workers carry a uvicorn Config
    if config is not None:
        loop, http = getattr(config, "loop", "auto"), getattr(config, "http", "auto")
        if loop == "auto":
            loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        if http == "auto":
            http = "httptools" if importlib.util.find_spec("httptools") else "h11"
        info.update(loop=loop, http=http if isinstance(http, str) else type(http).__name__)
    return info


def _running_loop() -> str | None:
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return type(loop).__module__.split(".")[0]  # "asyncio" or "uvloop", as the accounting says


def _describe_standalone() -> dict[str, Any]:
    info: dict[str, Any] = {"server": next((name for name in SERVERS if name in sys.modules), None)}
    if ENV.interface == "asgi":
        info["loop"] = _running_loop()
    return info


def _http_impl(send: Any) -> str | None:
    """Which HTTP implementation serves a request, from the module of the server's ``send``.

    uvicorn: ``httptools`` or ``h11`` (its protocol modules are named after the parser);
    hypercorn parses HTTP/1.1 with ``h11``; daphne with ``twisted`` (twisted.web); granian in Rust.
    """
    owner = getattr(send, "__self__", None) or getattr(getattr(send, "func", None), "__self__", None)
    module = type(owner).__module__ if owner is not None else (getattr(send, "__module__", None) or "")
    for marker, name in (("httptools", "httptools"), ("h11", "h11"), ("hypercorn", "h11"),
                         ("daphne", "twisted"), ("twisted", "twisted"), ("granian", "granian")):
        if marker in module:
            return name
    return module.split(".")[0] or None


def _write_info(info: dict[str, Any]) -> None:
    path = _run_path("workers", f"{os.getpid()}.json")
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)
    _info.clear()
    _info.update(info)


def announce_ready(worker: Any = None) -> None:
    """Write ``workers/<pid>.json``: the recorder waits for one per worker before load starts.

    *worker* is gunicorn's worker object; None in servers without gunicorn's hooks.

    First it runs one full garbage collection, in every mode (``--bare`` too): start-up leaves
    tens of thousands of new objects for the collector, and the full collection they eventually
    set off (50-200 ms a worker on this machine) would otherwise land in the measured window of
    one run and not another's, by how many modules each imported (the instruments' included).
    """
    t0 = time.perf_counter()
    gc.collect()
    info: dict[str, Any] = {
        "startup_gc_ms": round((time.perf_counter() - t0) * 1000, 1),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "ready_unix": time.time(),
        "python": sys.version.split()[0],
        **_describe_server(worker),
    }
    if ENV.interface == "asgi":  # which middleware Django will run in threads (the hop finding names them)
        from asyncprof.worker import middleware_check

        info["middleware"] = middleware_check.sync_only_middleware()
    _write_info(info)


def install_standalone() -> bool:
    """Install the instruments in a worker of a server without gunicorn's hooks; once per process.

    Called when the application module is imported, before the user's app is (the
    instrumentors patch the database drivers).  Returns True in such a worker, False under
    gunicorn, whose post_fork hook has done this already.
    """
    global _standalone
    if _managed:
        return False
    if _standalone:
        return True
    _standalone = True
    if ENV.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    install_tracing()
    install_accounting()
    if "uvicorn" in sys.modules:  # uvicorn's own workers import the app from inside uvicorn
        flush_at_server_shutdown()
    atexit.register(shutdown)
    # A worker started by multiprocessing's fork leaves through os._exit, past atexit; its exit
    # finalizers still run (granian's workers, for one).
    multiprocessing.util.Finalize(None, shutdown, exitpriority=100)
    return True


def patch_gevent_first(worker: Any) -> None:
    """In a gunicorn gevent worker, monkey-patch before the instruments start.

    gunicorn patches in the worker's ``init_process``, after ``post_fork``: the span exporter's
    thread would be a real thread then (and trip over the patched ``threading`` as it exits), and
    the accounting's wrapper around ``time.sleep`` would call the blocking one.  Patching first is
    what gevent applications do; gunicorn's own ``patch_all`` afterwards changes nothing more.
    """
    if type(worker).__module__ == "gunicorn.workers.ggevent":
        from gevent import monkey

        monkey.patch_all()


def managed_by_gunicorn() -> None:
    """gunicorn's post_fork hook runs in this process: the standalone path stays off."""
    global _managed
    _managed = True


def announce_at_import() -> bool:
    """Whether a standalone worker announces itself when the application module is imported."""
    return ENV.announce != "lifespan"


def serve_standalone_asgi(app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """The outermost layer in a standalone ASGI worker: the lifespan protocol, and server facts.

    Lifespan startup installs the accounting's loop hooks (before the first request's task is
    created) and, when the mode says so, announces the worker; lifespan shutdown flushes the
    instruments.  Django itself does not speak lifespan, so it never sees it.  The first HTTP
    request records which loop and HTTP implementation served it in ``workers/<pid>.json``.
    """
    first = True

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal first
        if scope.get("type") == "lifespan":
            return await _lifespan(receive, send)
        if first and scope.get("type") == "http":
            first = False
            _note_http(send)
        return await app(scope, receive, send)

    return application


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        kind = message.get("type")
        if kind == "lifespan.startup":
            if ENV.accounting:
                from asyncprof.worker import accounting

                accounting.install_loop()
            if not announce_at_import():
                announce_ready()
            await send({"type": "lifespan.startup.complete"})
        elif kind == "lifespan.shutdown":
            shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _note_http(send: Any) -> None:
    if not _info:
        return
    info = dict(_info)
    info.update(loop=_running_loop(), http=_http_impl(send))
    if info != _info:
        _write_info(info)


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
    """Write the accounting's last records, flush and close the span exporters; at worker exit.

    Runs once per process, however many exit paths call it.
    """
    global _provider, _closed
    if _closed:
        return
    _closed = True
    if ENV.accounting:
        from asyncprof.worker import accounting

        accounting.close()
    if _provider is not None:
        _provider.shutdown()
        _provider = None
    _write_exit_counts()


def _write_exit_counts() -> None:
    """Add the span counts (once the exporters have flushed) and the profiles' cost to
    ``workers/<pid>.json``."""
    if not _info:  # a process that never announced itself served no load
        return
    info = dict(_info)
    if _span_counters is not None:
        from asyncprof.worker.span_counts import counts

        info["spans"] = counts(*_span_counters)
    if "asyncprof.worker.profiling" in sys.modules:  # imported by Django's middleware loading
        info["pyinstrument"] = sys.modules["asyncprof.worker.profiling"].STATS.to_json()
    if info == _info:
        return
    try:
        _write_info(info)
    except OSError:  # a full disk at exit: the report says the counts are missing
        pass
