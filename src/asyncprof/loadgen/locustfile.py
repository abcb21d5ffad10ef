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
    ``name=path:weight`` entries separated by commas.
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

No OpenTelemetry SDK here: the generator only makes up ids and logs them, and asyncprof
turns each logged request into its client span after the run (see
:mod:`asyncprof.analysis.traces`), so tracing costs the load generator nothing per request.
"""

import logging
import os
import random
import time

import gevent
from locust import FastHttpUser, events, task
from locust.runners import MasterRunner, WorkerRunner

from asyncprof.loadgen.request_log import REQUEST_LOG_HEADER  # noqa: F401 - re-exported for the readers' tests
from asyncprof.loadgen.trace_sampling import LOW_64_BITS, SAMPLE_ENV, sample_bound

RATE = float(os.environ.get("ASYNCPROF_RATE") or 0)
CONNECTIONS = int(os.environ.get("ASYNCPROF_CONNECTIONS") or 50)
#: Open loop: requests waiting for a connection beyond this many are dropped (and logged as errors)
#: rather than queued without bound in the generator's memory.
MAX_OUTSTANDING = max(1000, 20 * CONNECTIONS)
#: Open loop: a p99 schedule lag above this means the generator, not the server, set the pace.
LAG_WARNING_MS = 10.0
_SAMPLE_BOUND = sample_bound(min(1.0, max(0.0, float(os.environ.get(SAMPLE_ENV) or 1))))


def _parse_paths(spec: str) -> list[tuple[str, str, int]]:
    out = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, rest = entry.partition("=")
        path, _, weight = rest.partition(":")
        out.append((name, path, int(weight or 1)))
    return out or [("health", "/health/", 1)]


PATHS = _parse_paths(os.environ.get("ASYNCPROF_PATHS", ""))
_CHOICES = [(name, path) for name, path, weight in PATHS for _ in range(weight)]
_LOG_PATH = os.environ.get("ASYNCPROF_REQUEST_LOG")
MESSAGE = "asyncprof_requests"
_buffer: list[str] = []
_log: int | None = None  # an O_APPEND file descriptor (single process, or the master)
_runner: WorkerRunner | None = None  # set in a distributed worker: batches go to the master
_lags: list[float] = []
_stopping = False  # the test is stopping: the open loop schedules no more requests


def _flush() -> None:
    global _buffer
    if not _buffer or (_log is None and _runner is None):
        return
    lines, _buffer = _buffer, []
    if _runner is not None:
        _runner.send_message(MESSAGE, {"lines": "".join(lines)})
    else:
        _write("".join(lines))


def _write(text: str) -> None:
    data = text.encode()
    while data and _log is not None:  # a regular file takes the whole write; loop for a short one
        data = data[os.write(_log, data):]


def _received(environment, msg, **kwargs) -> None:
    lines = (msg.data or {}).get("lines") if isinstance(msg.data, dict) else None
    if isinstance(lines, str):
        _write(lines)


def _flusher() -> None:
    while True:
        gevent.sleep(0.5)
        _flush()


@events.init.add_listener
def _open_log(environment, **kwargs) -> None:
    global _log, _runner
    if isinstance(environment.runner, WorkerRunner):
        _runner = environment.runner
        gevent.spawn(_flusher)
        return
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(MESSAGE, _received)
    if _LOG_PATH and _log is None:
        # asyncprof writes the header before any Locust process starts.
        _log = os.open(_LOG_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        gevent.spawn(_flusher)


@events.test_stopping.add_listener
def _stop_arrivals(environment, **kwargs) -> None:
    # Without this the open loop would keep sending until Locust kills it (--stop-timeout), and in
    # distributed mode those requests reach the server after the master stopped logging: server
    # spans and accounting records with no client request.
    global _stopping
    _stopping = True


@events.test_stop.add_listener
def _flush_at_stop(environment, **kwargs) -> None:
    # A distributed worker's last batch must reach the master before the master quits.
    _flush()


@events.request.add_listener
def _log_request(request_type, name, response_time, response_length, response=None, context=None,
                 exception=None, start_time=None, **kwargs) -> None:
    if _log is None and _runner is None:
        return
    status = getattr(response, "status_code", 0) or 0
    error = "" if exception is None else repr(exception).replace("\t", " ").replace("\n", " ")[:200]
    context = context or {}
    trace_id = context.get("trace_id", "")
    span_id = context.get("span_id", "")
    sampled = "1" if context.get("sampled", True) else "0"
    scheduled = context.get("scheduled")
    lag = ""
    if scheduled is not None and start_time is not None:
        # Open loop: start and latency run from the scheduled time (no coordinated omission).
        lag_ms = max(0.0, (start_time - scheduled) * 1000.0)
        _lags.append(lag_ms)
        start_time, response_time, lag = scheduled, response_time + lag_ms, f"{lag_ms:.3f}"
    _buffer.append(f"{start_time:.6f}\t{name}\t{status}\t{response_time:.3f}\t{response_length}\t{trace_id}"
                   f"\t{error}\t{lag}\t{span_id}\t{sampled}\n")


@events.quitting.add_listener
def _close_log(environment, **kwargs) -> None:
    global _log
    _flush()
    _report_lag()
    if _log is not None:
        os.close(_log)
        _log = None


def _report_lag() -> None:
    if len(_lags) >= 20:
        lags = sorted(_lags)
        p99 = lags[int(0.99 * (len(lags) - 1))]
        if p99 > LAG_WARNING_MS:
            # The recorder reads this line from the log: the run is then not valid for conclusions.
            logging.getLogger("asyncprof").warning(
                "asyncprof: load generator fell behind its schedule: p99 lag %.1f ms, max %.1f ms "
                "(short of CPU: use --load-processes or a lower --rate)", p99, lags[-1])


def _get(client, scheduled: float | None = None) -> None:
    name, path = random.choice(_CHOICES)
    tid = random.getrandbits(128) or 1
    trace_id = f"{tid:032x}"
    span_id = f"{random.getrandbits(64) or 1:016x}"
    sampled = (tid & LOW_64_BITS) < _SAMPLE_BOUND
    context: dict = {"trace_id": trace_id, "span_id": span_id, "sampled": sampled}
    if scheduled is not None:
        context["scheduled"] = scheduled
    client.get(path, name=name, headers={"traceparent": f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"},
               context=context)


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

        while not _stopping:
            delay = scheduled - time.time()
            if delay > 0:
                gevent.sleep(delay)
                if _stopping:
                    break
            if outstanding >= MAX_OUTSTANDING:
                name = random.choice(_CHOICES)[0]
                _buffer.append(f"{scheduled:.6f}\t{name}\t0\t0.000\t0\t\tdropped: {outstanding} requests "
                               f"outstanding in the load generator\t0.000\t\t\n")
            else:
                outstanding += 1
                gevent.spawn(one, scheduled)
            scheduled += interval
        # Let the requests in flight answer (and be logged) before this user ends; Locust's
        # --stop-timeout bounds the wait, as it bounded the endless loop before.
        while outstanding > 0:
            gevent.sleep(0.05)
