"""pyinstrument for one request in every N, running where the view runs.

The middleware is sync-and-async capable, so under ASGI Django calls it in
the request's own task (no sync_to_async hop), and the profiler, started with
``async_mode="enabled"``, follows that task across awaits.  Under WSGI it runs
in the worker thread.  Each profile is saved as a pyinstrument session file
named by the request's W3C trace id, so it can be found from its trace.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import thread_time_ns
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from pyinstrument import Profiler

from asyncprof.worker.hooks import ENV

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_DIR = Path(ENV.run_dir, "profiles") if ENV.run_dir else None
_EVERY = max(ENV.profile_every, 1)


def _trace_id(request: Any, n: int) -> str:
    match = _TRACEPARENT.match(request.META.get("HTTP_TRACEPARENT", ""))
    return match.group(1) if match else f"untraced-{os.getpid()}-{n}"


class ProfileStats:
    """What profiling cost this worker, for ``workers/<pid>.json`` at exit: the profiles saved and
    the CPU spent saving them (the profiler's own sampling inside a profiled request is not in it)."""

    profiles = 0
    save_cpu_ns = 0

    def to_json(self) -> dict[str, Any]:
        return {"profiles": self.profiles, "save_cpu_s": round(self.save_cpu_ns / 1e9, 6)}


STATS = ProfileStats()


def _save(profiler: Profiler, request: Any, n: int) -> None:
    c0 = thread_time_ns()
    try:
        _write(profiler, request, n)
    finally:
        STATS.save_cpu_ns += thread_time_ns() - c0


def _write(profiler: Profiler, request: Any, n: int) -> None:
    session = profiler.last_session
    if _DIR is None or session is None:
        return
    _DIR.mkdir(parents=True, exist_ok=True)
    path = _DIR / f"{_trace_id(request, n)}.pyisession"
    session.save(path)
    STATS.profiles += 1
    if ENV.otel:  # the request's server span says where its profile is (it shows in Jaeger)
        from opentelemetry import trace

        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("asyncprof.profile", str(path.resolve()))


def profile_middleware(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Django middleware factory: profile request number N, 2N, 3N... of this worker."""
    counter = itertools.count(1)

    if iscoroutinefunction(get_response):
        get_response_async: Callable[[Any], Awaitable[Any]] = get_response

        async def middleware(request: Any) -> Any:
            n = next(counter)
            if n % _EVERY:
                return await get_response_async(request)
            profiler = Profiler(async_mode="enabled")
            profiler.start()
            try:
                return await get_response_async(request)
            finally:
                profiler.stop()
                _save(profiler, request, n)

        return markcoroutinefunction(middleware)

    def sync_middleware(request: Any) -> Any:
        n = next(counter)
        if n % _EVERY:
            return get_response(request)
        profiler = Profiler(async_mode="disabled")
        profiler.start()
        try:
            return get_response(request)
        finally:
            profiler.stop()
            _save(profiler, request, n)

    return sync_middleware


profile_middleware.sync_capable = True  # type: ignore[attr-defined]
profile_middleware.async_capable = True  # type: ignore[attr-defined]
