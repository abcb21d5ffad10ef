"""asyncprof's per-request log, written from Locust's ``request`` event for any user class.

Importing this module registers its listeners on Locust's global ``events`` (once: Python
imports a module once), so every request any user reports, asyncprof's own or a user's
locustfile's, becomes one line of the request log.  The format is
:data:`asyncprof.loadgen.request_log.REQUEST_LOG_HEADER`; the columns are described in
:mod:`asyncprof.loadgen.locustfile`.

What a line says about tracing comes from the request's Locust ``context``: ``trace_id``,
``span_id`` (the parent id of the ``traceparent`` sent), ``sampled`` (default true) and, for the
open loop, ``scheduled`` (the unix time the request was due; its start and latency then run
from that time).  Requests without them are logged with empty ids.

Configured by the environment:

``ASYNCPROF_REQUEST_LOG``
    the file that receives the lines (opened in append mode; asyncprof wrote its header).  In
    Locust's distributed mode only the master writes it: workers send their batches to the
    master as ``asyncprof_requests`` messages, so workers on other machines need no shared disk.
    Unset: nothing is logged.

Lines are buffered and written every 0.5 s from a background greenlet, so users never wait on
the disk, and flushed when the test stops and when Locust quits.
"""

import logging
import os
import time

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

#: The Locust message a distributed worker sends its batches of lines in.
MESSAGE = "asyncprof_requests"
#: Open loop: a p99 schedule lag above this means the generator, not the server, set the pace.
LAG_WARNING_MS = 10.0

_LOG_PATH = os.environ.get("ASYNCPROF_REQUEST_LOG")
_buffer: list[str] = []
_log: int | None = None  # an O_APPEND file descriptor (single process, or the master)
_runner: WorkerRunner | None = None  # set in a distributed worker: batches go to the master
_lags: list[float] = []
_stopping = False  # the test is stopping: open-loop users schedule no more requests


def stopping() -> bool:
    """Whether the test is stopping (Locust fired ``test_stopping``): start no new requests."""
    return _stopping


def log_dropped(scheduled: float, name: str, outstanding: int) -> None:
    """Log a request the open loop dropped at *scheduled* because *outstanding* were waiting.

    It counts as an error with status 0, no trace and zero lag, so the load shows what was asked.
    """
    _buffer.append(f"{scheduled:.6f}\t{name}\t0\t0.000\t0\t\tdropped: {outstanding} requests "
                   f"outstanding in the load generator\t0.000\t\t\n")


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
    name = str(name)
    if "\t" in name or "\n" in name:  # a user's name (a URL path, say) must not split the line
        name = name.replace("\t", " ").replace("\n", " ")
    context = context or {}
    trace_id = context.get("trace_id", "")
    span_id = context.get("span_id", "")
    sampled = "1" if context.get("sampled", True) else "0"
    scheduled = context.get("scheduled")
    lag = ""
    if start_time is None:  # a custom client that reports no start: the best guess is now - latency
        start_time = time.time() - (response_time or 0) / 1000.0
    if scheduled is not None:
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
