"""pyinstrument for one request in every N, running where the view runs.

The middleware is sync-and-async capable, so under ASGI Django calls it in the request's own
task (no sync_to_async hop).  There, when the accounting's loop hooks time that task (a request
in the sample), the profiler runs during the task's steps only
(:func:`asyncprof.worker.loop_hooks.profile_steps`): its hook slows every call while it runs, and
the other requests on the loop are not slowed by it.  The profile then holds the request's own
time on the loop; its awaits are in the accounting's breakdown.  Without the loop hooks it is
started with ``async_mode="enabled"`` and follows the task across awaits (showing them as
``[await]``), running meanwhile for every task on the loop.  Under WSGI it runs in the worker
thread.  Each profile is saved as a pyinstrument session file named by the request's W3C trace
id, so it can be found from its trace.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import thread_time_ns
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from pyinstrument import Profiler

from asyncprof.worker import loop_hooks
from asyncprof.worker.hooks import ENV
from asyncprof.worker.sampling import sampled

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_DIR = Path(ENV.run_dir, "profiles") if ENV.run_dir else None
_EVERY = max(ENV.profile_every, 1)


_untraced = itertools.count(1)


def _trace_id(request: Any) -> str:
    match = _TRACEPARENT.match(request.META.get("HTTP_TRACEPARENT", ""))
    return match.group(1) if match else f"untraced-{os.getpid()}-{next(_untraced)}"


class ProfileStats:
    """What profiling cost this worker, for ``workers/<pid>.json`` at exit: the profiles saved and
    the CPU spent saving them (the profiler's own sampling inside a profiled request is not in it)."""

    profiles = 0
    save_cpu_ns = 0

    def to_json(self) -> dict[str, Any]:
        return {"profiles": self.profiles, "save_cpu_s": round(self.save_cpu_ns / 1e9, 6)}


STATS = ProfileStats()


def _save(profiler: Profiler, request: Any) -> None:
    c0 = thread_time_ns()
    try:
        _write(profiler, request)
    finally:
        STATS.save_cpu_ns += thread_time_ns() - c0


def _write(profiler: Profiler, request: Any) -> None:
    session = profiler.last_session
    if _DIR is None or session is None:
        return
    _DIR.mkdir(parents=True, exist_ok=True)
    path = _DIR / f"{_trace_id(request)}.pyisession"
    session.save(path)
    STATS.profiles += 1
    if ENV.otel:  # the request's server span says where its profile is (it shows in Jaeger)
        from opentelemetry import trace

        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("asyncprof.profile", str(path.resolve()))


def profile_middleware(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Django middleware factory: profile one request in every N of this worker.

    Every Nth request (from a random phase, drawn once per worker: counting from 1, the first
    profile would come only after N requests, so a short run, or a benchmark's, would have none and
    seem to cost nothing) makes the next request *in the sample* the profiled one: so each profile
    has the request's trace and breakdown record, and under ASGI its task is timed, which lets the
    profiler run during that task's steps only (:func:`asyncprof.worker.loop_hooks.profile_steps`).
    Requests without a ``traceparent`` are in the sample (:mod:`asyncprof.worker.sampling`).
    """
    counter = itertools.count(random.randrange(_EVERY) + 1)
    pending = False  # an Nth request has passed: the next one in the sample is profiled

    def chosen(request: Any) -> bool:
        """Called for an Nth request and for each one after it until one is in the sample (the
        other requests take the middleware's first test alone: one call less on most of them)."""
        nonlocal pending
        pending = True
        if not sampled(request.META.get("HTTP_TRACEPARENT")):
            return False
        pending = False
        return True

    if iscoroutinefunction(get_response):
        get_response_async: Callable[[Any], Awaitable[Any]] = get_response

        async def middleware(request: Any) -> Any:
            if (next(counter) % _EVERY and not pending) or not chosen(request):
                return await get_response_async(request)
            # During this task's steps only, if the loop hooks time it; else across the request's
            # awaits (pyinstrument's async mode), slowing every task on the loop meanwhile.
            profiler = Profiler(async_mode="disabled")
            if not loop_hooks.profile_steps(profiler):
                profiler = Profiler(async_mode="enabled")
            profiler.start()  # (per step: the end of this one stops it, the next one's start restarts it)
            try:
                return await get_response_async(request)
            finally:
                loop_hooks.end_profile_steps()
                if profiler.is_running:
                    profiler.stop()
                _save(profiler, request)

        return markcoroutinefunction(middleware)

    def sync_middleware(request: Any) -> Any:
        if (next(counter) % _EVERY and not pending) or not chosen(request):
            return get_response(request)
        profiler = Profiler(async_mode="disabled")
        profiler.start()
        try:
            return get_response(request)
        finally:
            profiler.stop()
            _save(profiler, request)

    return sync_middleware


profile_middleware.sync_capable = True  # type: ignore[attr-defined]
profile_middleware.async_capable = True  # type: ignore[attr-defined]
