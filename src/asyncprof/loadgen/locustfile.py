"""asyncprof's Locust user: closed-loop GETs with a W3C traceparent and a per-request log.

Configured by the environment (set by ``asyncprof record``):

``ASYNCPROF_PATHS``
    ``name=path:weight`` entries separated by commas.
``ASYNCPROF_REQUEST_LOG``
    file that receives one tab-separated line per request: start time (unix
    seconds), endpoint name, HTTP status (0 = no response), latency (ms),
    response bytes, trace id, error text.  Written in batches from a
    background greenlet so the users never wait on the disk.
"""

import os
import random

import gevent
from locust import FastHttpUser, events, task

REQUEST_LOG_HEADER = "start\tname\tstatus\tlatency_ms\tbytes\ttrace_id\terror\n"


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
_buffer: list[str] = []
_log = None


def _flush() -> None:
    global _buffer
    if _log is None or not _buffer:
        return
    lines, _buffer = _buffer, []
    _log.write("".join(lines))
    _log.flush()


def _flusher() -> None:
    while True:
        gevent.sleep(0.5)
        _flush()


@events.init.add_listener
def _open_log(environment, **kwargs) -> None:
    global _log
    if _LOG_PATH and _log is None:
        _log = open(_LOG_PATH, "a", buffering=1 << 20)  # noqa: SIM115 - closed on quit
        if _log.tell() == 0:
            _log.write(REQUEST_LOG_HEADER)
        gevent.spawn(_flusher)


@events.request.add_listener
def _log_request(request_type, name, response_time, response_length, response=None, context=None,
                 exception=None, start_time=None, **kwargs) -> None:
    if _log is None:
        return
    status = getattr(response, "status_code", 0) or 0
    error = "" if exception is None else repr(exception).replace("\t", " ").replace("\n", " ")[:200]
    trace_id = (context or {}).get("trace_id", "")
    _buffer.append(f"{start_time:.6f}\t{name}\t{status}\t{response_time:.3f}\t{response_length}\t{trace_id}\t{error}\n")


@events.quitting.add_listener
def _close_log(environment, **kwargs) -> None:
    global _log
    _flush()
    if _log is not None:
        _log.close()
        _log = None


class AsyncprofUser(FastHttpUser):
    """One simulated visitor: requests back to back, no think time (the seed's closed loop)."""

    @task
    def visit(self) -> None:
        name, path = random.choice(_CHOICES)
        trace_id = f"{random.getrandbits(128) or 1:032x}"
        span_id = f"{random.getrandbits(64) or 1:016x}"
        self.client.get(
            path,
            name=name,
            headers={"traceparent": f"00-{trace_id}-{span_id}-01"},
            context={"trace_id": trace_id},
        )
