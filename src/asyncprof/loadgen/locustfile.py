"""asyncprof's Locust users: GETs with a W3C traceparent and a per-request log.

Two load models, chosen by the environment:

* closed loop (default): each user sends a request, waits for the answer, sends the next
  (the seed's setup; the load adapts to the server, which hides queueing: coordinated omission);
* open loop (``ASYNCPROF_RATE`` set): one user per Locust process starts requests on a fixed
  schedule, whether or not earlier ones have answered.  A request's start is its *scheduled*
  time and its latency runs from that time, so a generator that falls behind, or a connection
  pool that is full, adds to the latency instead of silently thinning the load.

Configured by the environment (set by ``asyncprof record``):

``ASYNCPROF_PATHS``
    a JSON list of ``[name, path, weight]`` entries.
``ASYNCPROF_REQUEST_LOG``
    file that receives one tab-separated line per request: start time (unix
    seconds), endpoint name, HTTP status (0 = no response), latency (ms),
    response bytes, trace id, error text, schedule lag (ms the request was sent
    after its scheduled time; empty in closed loop), the span id of the request's
    client span (the parent id in the ``traceparent`` it sent) and whether its trace
    is sampled (``1``/``0``).  Written in batches from a
    background greenlet so the users never wait on the disk.  In Locust's
    distributed mode only the master writes it: workers send their batches to
    the master as Locust messages, so workers on other machines need no shared
    disk and no setting but ``ASYNCPROF_PATHS``.
``ASYNCPROF_RATE``
    requests per second this process starts (open loop).
``ASYNCPROF_CONNECTIONS``
    open loop: the most connections this process keeps open to the server.
``ASYNCPROF_SAMPLE_TRACES``
    the fraction of traces marked sampled in the ``traceparent`` (default 1; see
    :mod:`asyncprof.loadgen.trace_sampling`).  The workers record spans for those only.

The log itself is written by :mod:`asyncprof.loadgen.request_listener` (imported here), which logs
the requests of any user class, so a user's own locustfile gets the same log through
:mod:`asyncprof.loadgen.app_locustfile`.

No OpenTelemetry SDK here: the generator only makes up ids and logs them, and asyncprof
turns each logged request into its client span after the run (see
:mod:`asyncprof.analysis.traces`), so tracing costs the load generator nothing per request.
"""

import json
import os
import random
import time

import gevent
from locust import FastHttpUser, task

from asyncprof.loadgen import request_listener  # registers the request log's listeners
from asyncprof.loadgen.request_log import REQUEST_LOG_HEADER  # noqa: F401 - re-exported for the readers' tests
from asyncprof.loadgen.trace_headers import format_traceparent, new_trace
from asyncprof.loadgen.trace_sampling import SAMPLE_ENV, sample_bound

RATE = float(os.environ.get("ASYNCPROF_RATE") or 0)
CONNECTIONS = int(os.environ.get("ASYNCPROF_CONNECTIONS") or 50)
#: Open loop: requests waiting for a connection beyond this many are dropped (and logged as errors)
#: rather than queued without bound in the generator's memory.
MAX_OUTSTANDING = max(1000, 20 * CONNECTIONS)
_SAMPLE_BOUND = sample_bound(min(1.0, max(0.0, float(os.environ.get(SAMPLE_ENV) or 1))))


def _parse_paths(spec: str) -> list[tuple[str, str, int]]:
    """``ASYNCPROF_PATHS``: a JSON list of ``[name, path, weight]`` (paths may hold ``=``, ``:`` and
    ``,``: query strings), or the older ``name=path:weight,...`` form."""
    if spec.lstrip().startswith("["):
        return [(str(name), str(path), int(weight)) for name, path, weight in json.loads(spec)] \
            or [("health", "/health/", 1)]
    out = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, rest = entry.partition("=")
        path, _, weight = rest.partition(":")
        out.append((name, path, int(weight or 1)))
    return out or [("health", "/health/", 1)]


PATHS = _parse_paths(os.environ.get("ASYNCPROF_PATHS", ""))
_CHOICES = [(name, path) for name, path, weight in PATHS for _ in range(weight)]


def _get(client, scheduled: float | None = None) -> None:
    name, path = random.choice(_CHOICES)
    context: dict = new_trace(_SAMPLE_BOUND)  # read here, not bound at import: the tests vary it
    if scheduled is not None:
        context["scheduled"] = scheduled
    client.get(path, name=name, headers={"traceparent": format_traceparent(context)}, context=context)


class AsyncprofUser(FastHttpUser):
    """One simulated visitor: requests back to back, no think time (the seed's closed loop)."""

    abstract = RATE > 0

    @task
    def visit(self) -> None:
        _get(self.client)


class ArrivalUser(FastHttpUser):
    """Open loop: starts a request every ``1/RATE`` seconds, each in its own greenlet.

    Requests share a pool of ``CONNECTIONS`` connections; when all are busy, new requests wait
    for one and that wait counts in their latency.  Past ``MAX_OUTSTANDING`` waiting requests a
    request is dropped and logged as an error (status 0) at its scheduled time.
    """

    abstract = RATE <= 0
    concurrency = CONNECTIONS

    @task
    def arrive(self) -> None:
        interval = 1.0 / RATE
        outstanding = 0
        scheduled = time.time()

        def one(at: float) -> None:
            nonlocal outstanding
            try:
                _get(self.client, at)
            finally:
                outstanding -= 1

        while not request_listener.stopping():
            delay = scheduled - time.time()
            if delay > 0:
                gevent.sleep(delay)
                if request_listener.stopping():
                    break
            if outstanding >= MAX_OUTSTANDING:
                request_listener.log_dropped(scheduled, random.choice(_CHOICES)[0], outstanding)
            else:
                outstanding += 1
                gevent.spawn(one, scheduled)
            scheduled += interval
        # Let the requests in flight answer (and be logged) before this user ends; Locust's
        # --stop-timeout bounds the wait, as it bounded the endless loop before.
        while outstanding > 0:
            gevent.sleep(0.05)
