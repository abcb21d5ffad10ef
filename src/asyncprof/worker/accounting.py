"""Per-request time accounting inside the workers: the source of the report's breakdown.

``install()`` (after fork) patches the call sites where requests wait
(:mod:`asyncprof.worker.call_hooks`); ``wrap_wsgi``/``wrap_asgi`` put a thin layer right
around the user's application that opens a :class:`~asyncprof.worker.record.RequestRecord`
per request and closes it when the last body byte is handed to the server; under ASGI the
first call also installs the loop hooks (:mod:`asyncprof.worker.loop_hooks`) on the running
loop.  Finished records go to ``accounting/<pid>.tsv`` and, when OTel is on, onto the
request's server span as ``asyncprof.*`` attributes; ``close()`` writes the worker summary
``accounting/<pid>.json``.

Everything here runs on the measured path, so it stays small: no allocation per step beyond
the clocks, no I/O per request (records are written in batches).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from asyncprof.worker import call_hooks, greenlet_hooks, loop_hooks, switches
from asyncprof.worker.clocks import perf_counter_ns, run_delay_ns, schedstat_available, thread_time_ns
from asyncprof.worker.record import UNSAMPLED, RecordWriter, RequestRecord, current
from asyncprof.worker.sampling import sampled
from asyncprof.worker.record_format import ACCOUNTING_DIR

_writer: RecordWriter | None = None
_summary: dict[str, Any] = {}
_otel = False
_unsampled = itertools.count()  # requests outside the sample; next() is atomic under threaded workers
_one_at_a_time = False  # see install()


def install(run_dir: str | None, *, interface: str, otel: bool, one_request_at_a_time: bool = False) -> None:
    """Patch the waiting call sites and open this worker's record file; once per process.

    *one_request_at_a_time*: the worker serves requests one after another on one thread (gunicorn's
    sync worker), so process-wide hooks may be switched per request (see ``wrap_wsgi``).
    """
    global _writer, _otel, _one_at_a_time
    if _writer is not None or not run_dir:
        return
    # ASGI requests start on the event loop, whose hooks know when a timed one is in flight: the
    # hop and query hooks are on only then (loop_hooks.switch_with_timed_requests).
    switched = interface == "asgi"
    _otel = otel
    _one_at_a_time = one_request_at_a_time
    _writer = RecordWriter(Path(run_dir, ACCOUNTING_DIR))
    _summary.update(
        pid=os.getpid(),
        interface=interface,
        loop=None,
        ready_wait_measured=False,
        schedstat=schedstat_available(),
        hooks={
            "asgiref": call_hooks.install_asgiref(switched),
            "psycopg2": call_hooks.install_psycopg2(),
            "asyncpg": call_hooks.install_asyncpg(switched),
            "httpx": call_hooks.install_httpx(),
            "time.sleep": True,
        },
        thread_cpu_at_install_s=time.thread_time(),
    )
    call_hooks.install_sleep()


def _clock_cost_ns(reps: int = 500, batches: int = 5) -> float:
    """What reading the three clocks once costs on this machine (the hooks' unit of cost).

    Measured warm, at exit, as the fastest of a few batches: preemption on a busy machine only
    ever adds time, so the minimum is the closest to the cost itself.
    """
    best = float("inf")
    for _ in range(batches):
        t0 = perf_counter_ns()
        for _ in range(reps):
            perf_counter_ns(), run_delay_ns(), thread_time_ns()
        best = min(best, (perf_counter_ns() - t0) / reps)
    return best


_HEX = "0123456789abcdef"


def _trace_id(traceparent: str | bytes | None) -> str:
    """The trace id of a W3C traceparent (``00-<32 hex>-<16 hex>-<2 hex>``), or ''."""
    if not traceparent:
        return ""
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode("latin-1")
    parts = traceparent.split("-")
    if len(parts) < 4 or len(parts[1]) != 32:
        return ""
    trace_id = parts[1].lower()
    # 32 hex digits, not all zero (W3C: an invalid id, which a tracer would replace with its own).
    return trace_id if trace_id.strip("0") and not trace_id.strip(_HEX) else ""


def _current_span() -> Any:
    if not _otel:
        return None
    from opentelemetry import trace

    span = trace.get_current_span()
    return span if span.is_recording() else None


def _finish(rec: RequestRecord) -> None:
    rec.end_ns = perf_counter_ns()
    rec.closed = True
    if rec.span is not None:
        rec.span.set_attributes(rec.attributes())
    if _writer is not None:
        _writer.add(rec)


# --- WSGI -------------------------------------------------------------------------------------


class _ClosingBody:
    """The response iterable, closing the request's record when the server closes it."""

    def __init__(self, body: Iterable[bytes], rec: RequestRecord, c0: int, r0: int) -> None:
        self.body, self.rec, self.c0, self.r0 = body, rec, c0, r0

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()  # Django sends request_finished here: part of the request
        finally:
            _finish_wsgi(self.rec, self.c0, self.r0)


def _finish_wsgi(rec: RequestRecord, c0: int, r0: int) -> None:
    if rec.closed:
        return
    if not greenlet_hooks.end(rec):  # under gevent the greenlet's runs were accounted at each switch
        c1, r1, t1 = thread_time_ns(), run_delay_ns(), perf_counter_ns()
        rec.add_running(t1 - rec.start_ns, c1 - c0, r1 - r0)
    _finish(rec)
    current.set(None)


def wrap_wsgi(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Account every request of a WSGI *app*, from the call to the response's ``close()``."""
    if _writer is None:
        return app
    greenlets = _follow_greenlets()  # gunicorn's gevent worker has patched the process by now
    # Process-wide hooks follow each request's sample state (asyncprof.worker.switches) only where
    # no other request can be running meanwhile.
    switching = _one_at_a_time and not greenlets

    def outside_sample(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        next(_unsampled)
        current.set(UNSAMPLED)  # the hooks of this request's calls take their short way
        if switching:
            switches.follow(False)  # libpq's own blocking waits: nothing to time
        return app(environ, start_response)

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not sampled(environ.get("HTTP_TRACEPARENT")):
            return outside_sample(environ, start_response)
        if switching:
            switches.follow(True)
        t0, r0, c0 = perf_counter_ns(), run_delay_ns(), thread_time_ns()
        rec = RequestRecord(_trace_id(environ.get("HTTP_TRACEPARENT")), environ.get("PATH_INFO", ""),
                            time.time(), t0)
        if greenlets:
            greenlet_hooks.begin(rec, t0, c0, r0)
        rec.span = _current_span()
        current.set(rec)  # not reset on return: the server iterates and closes the body after
        try:
            body = app(environ, start_response)
        except BaseException:
            _finish_wsgi(rec, c0, r0)
            raise
        return _ClosingBody(body, rec, c0, r0)

    # For a wrapper outside this one that has already found the request outside the sample (OTel's, in
    # asyncprof.worker.hooks): the short way without asking again, one call less on most requests.
    application.outside_sample = outside_sample  # type: ignore[attr-defined]
    return application


def _follow_greenlets() -> bool:
    """Under gevent, account requests per greenlet (:mod:`asyncprof.worker.greenlet_hooks`)."""
    if greenlet_hooks.install():
        import select

        # psycopg2's wait callback calls select.select at each wait: gevent's, cooperative, once patched
        _summary.update(concurrency="gevent", hooks={**_summary.get("hooks", {}), "greenlets": True},
                        ready_wait_measured=True,  # the time a request's greenlet is switched out
                        psycopg2_select=f"{select.select.__module__}.{select.select.__name__}")
        return True
    return False


# --- ASGI -------------------------------------------------------------------------------------


def install_loop() -> None:
    """Install the loop hooks on the running loop (servers that send lifespan startup first)."""
    if _writer is not None:
        _install_loop()


def _install_loop() -> None:
    if _summary.get("loop") is not None:
        return
    loop = asyncio.get_running_loop()
    _summary["loop"] = type(loop).__module__.split(".")[0]
    _summary["ready_wait_measured"] = loop_hooks.install(loop)


def wrap_asgi(app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Account every HTTP request of an ASGI *app*, from its task's creation to the last body."""
    if _writer is None:
        return app

    def outside_sample(scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        # A plain function returning the app's coroutine: no coroutine frame of its own to resume
        # at every step of the request.
        if _summary.get("loop") is None:
            _install_loop()
        next(_unsampled)
        # The task running it stops being timed (if the server's task was: see
        # loop_hooks.task_factory), and the tasks it creates are plain.  The hooks of its calls
        # find no record in the context and take their short way.
        loop_hooks.untime_current_task()
        return app(scope, receive, send)

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        _install_loop()  # the first call (lifespan startup under uvicorn) comes before any request
        if scope.get("type") != "http":
            return await app(scope, receive, send)
        traceparent = next((v for k, v in scope.get("headers", ()) if k == b"traceparent"), None)
        if not sampled(traceparent):
            return await outside_sample(scope, receive, send)
        now = perf_counter_ns()
        start = loop_hooks.request_start_ns() or now
        rec = RequestRecord(_trace_id(traceparent), scope.get("path", ""), time.time() - (now - start) / 1e9, start)
        rec.span = _current_span()
        current.set(rec)
        loop_hooks.first_wait(rec)

        async def accounted_send(message: dict[str, Any]) -> None:
            # The request ends as its last body message is handed over: OTel's ASGI middleware
            # (outside) ends the server span inside this send, so the attributes go on before.
            if message.get("type") == "http.response.body" and not message.get("more_body", False) and not rec.closed:
                loop_hooks.finish_running(rec)
                _finish(rec)
            await send(message)

        try:
            await app(scope, receive, accounted_send)
        finally:
            if not rec.closed:  # an app that failed or never finished its body
                loop_hooks.finish_running(rec)
                _finish(rec)

    # For OTel's wrapper outside this one, which has already found the request outside the sample.
    application.outside_sample = outside_sample  # type: ignore[attr-defined]
    return application


# --- worker exit --------------------------------------------------------------------------------


def close() -> None:
    """Write the pending records and the worker summary (``accounting/<pid>.json``); idempotent."""
    if _writer is None:
        return
    _writer.flush()
    stats = loop_hooks.STATS
    clock = _summary["clock_read_ns"] = round(_clock_cost_ns(), 1)
    loop_hooks_s = (stats.hook_estimate_ns() + 2 * clock * stats.steps) / 1e9  # + the clock reads before each t1
    # The loop-side hooks time themselves (wall time, so preemption inflates it a little); for the
    # rest, count clock reads: 2 per request, 4 per hop (2 on the hop thread), 2 per psycopg2 wait.
    # scripts/bench-accounting measures the real cost from outside.
    accounted = _writer.written  # every finished sampled request is written; exact with threaded workers too
    requests = accounted + next(copy.copy(_unsampled))  # a copy's next value: how many were outside the sample
    reads = 2 * accounted + 4 * sum(call_hooks.HOP_SITES.values()) + 2 * call_hooks.STATS.timed_waits
    reads += greenlet_hooks.STATS.clock_reads  # gevent: one per switch of a request's greenlet
    cost_s = loop_hooks_s + reads * clock / 1e9
    _summary.update(
        requests=requests,  # every request served, in the sample or not: the hooks' cost is spread over all
        records_written=accounted,
        record_write_cpu_s=round(_writer.cpu_ns / 1e9, 6),
        hop_sites=dict(call_hooks.HOP_SITES.most_common()),
        steps=stats.steps,
        hook_stretches_preempted=stats.preempted,
        steps_cpu_s=stats.steps_cpu_ns / 1e9 if stats.steps else None,
        loop_thread_cpu_s=(time.thread_time() - _summary["thread_cpu_at_install_s"]) if stats.steps else None,
        hook_cost_us_per_request=round(cost_s * 1e6 / requests, 1) if requests else None,
        loop_hooks_us_per_request=round(loop_hooks_s * 1e6 / requests, 1) if requests else None,
    )
    path = _writer.path.with_suffix(".json")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_summary, indent=1))
    tmp.replace(path)
