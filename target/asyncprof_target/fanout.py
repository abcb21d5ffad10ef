"""The fanout views: each request calls an upstream HTTP service 3 times.

``ASYNCPROF_UPSTREAM_URL`` (set by ``asyncprof record --scenario fanout``, which starts the
upstream itself) is the service's base URL; it answers every GET after a fixed delay.

* ``fanout_sync`` makes the 3 calls one after another with an :class:`httpx.Client`: about
  3 × the delay per request.  One client per worker process, shared by its threads (httpx's
  connection pool is thread-safe) and kept for the process's life, so connections stay open
  between requests (keep-alive), as a real service's would.  Not one per thread: under ASGI
  Django runs each request's sync view in a thread of its own, so a thread's client would be
  built for every request (about 40 ms of CPU here: loading the CA bundle).
* ``fanout_async`` makes them at once with an :class:`httpx.AsyncClient` and
  :func:`asyncio.gather`: about 1 × the delay.  One client per event loop: an async client's
  connections belong to the loop they were opened on and cannot be used from another.

A call that fails (connection refused, a status of 400 or more) fails the request (500),
so a broken upstream shows as errors in the report.  This module must not import asyncprof.
"""

import asyncio
import os
import threading

import httpx
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, JsonResponse

ENV_VAR = "ASYNCPROF_UPSTREAM_URL"
CALLS = 3
UPSTREAM_URL = os.environ.get(ENV_VAR, "").rstrip("/")
# Generous: the upstream's delay is at most 10 s.  One client serves every request of a worker
# (of an event loop, for the async view), so its pool holds a connection per concurrent call.
TIMEOUT = httpx.Timeout(60.0)
LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=512)

_sync_client_: httpx.Client | None = None
_async_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
_lock = threading.Lock()


def _urls() -> list[str]:
    if not UPSTREAM_URL:
        raise ImproperlyConfigured(f"{ENV_VAR} is not set: the fanout views need an upstream service "
                                   "(asyncprof record --scenario fanout starts one)")
    return [f"{UPSTREAM_URL}/fanout/{i}" for i in range(CALLS)]


def _sync_client() -> httpx.Client:
    global _sync_client_
    if _sync_client_ is None:
        with _lock:
            if _sync_client_ is None:
                _sync_client_ = httpx.Client(timeout=TIMEOUT, limits=LIMITS)
    return _sync_client_


def _async_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        with _lock:
            # Clients of loops that are gone (async_to_sync runs each call on a loop of its own)
            # cannot be closed any more; drop them so they do not pile up.
            for old in [lp for lp in _async_clients if lp.is_closed()]:
                del _async_clients[old]
            client = _async_clients[loop] = httpx.AsyncClient(timeout=TIMEOUT, limits=LIMITS)
    return client


def fanout_sync(request: HttpRequest) -> JsonResponse:
    client = _sync_client()
    statuses = []
    for url in _urls():
        response = client.get(url)
        response.raise_for_status()
        statuses.append(response.status_code)
    return JsonResponse({"view": "sync", "calls": len(statuses), "statuses": statuses})


async def fanout_async(request: HttpRequest) -> JsonResponse:
    client = _async_client()
    responses = await asyncio.gather(*(client.get(url) for url in _urls()))
    for response in responses:
        response.raise_for_status()
    return JsonResponse({"view": "async", "calls": len(responses), "statuses": [r.status_code for r in responses]})
