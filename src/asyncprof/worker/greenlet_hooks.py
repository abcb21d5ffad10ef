"""Per-request accounting that follows greenlets: WSGI under gevent (gunicorn's gevent workers).

Under gevent every request of a worker runs in a greenlet of its own, all on the worker's one
thread, so the thread's clocks over a request's lifetime hold every other request's work too.
Here the accounting follows the greenlets instead:

* ``greenlet.settrace`` sees every switch.  While a request's greenlet runs, the three clocks
  split its time as usual (``cpu``, ``os_run_queue``, off-CPU left over is ``gil_wait``);
* the time it spends switched out is charged by what it was waiting for: psycopg2's wait
  callback (its ``select`` is gevent's once the worker is monkey-patched: cooperative) marks a
  database wait (``db_wait``, or ``db_connect`` while connecting), gevent's ``time.sleep`` is
  ``blocking`` up to the time asked for, the httpx hooks mark an upstream HTTP call
  (``upstream_wait``), anything else is ``event_loop`` (the worker's hub was running other
  greenlets, so the request could not run);
* of a database or upstream wait, the part after the answer arrived while the hub was busy is
  ``event_loop`` too: the hub's poll is timed with a prepare and a check watcher, and the lag
  estimated as for asyncio (:func:`asyncprof.worker.loop_hooks.loop_lag_ns`).

So a request's categories sum to its wall time, as under the other modes.  Installed by the
accounting once gevent has patched the process (:func:`install`); a no-op otherwise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from asyncprof.worker import loop_hooks
from asyncprof.worker.clocks import perf_counter_ns, run_delay_ns, thread_time_ns
from asyncprof.worker.record import RequestRecord

RUNNING, WAIT_OTHER, WAIT_DB, WAIT_CONNECT, WAIT_SLEEP, WAIT_UPSTREAM = 0, 1, 2, 3, 4, 5


class _State:
    """A request's greenlet: its record, when its current run started, what it waits for."""

    __slots__ = ("rec", "t0", "c0", "r0", "out_ns", "wait", "sleep_ns")

    def __init__(self, rec: RequestRecord, t0: int, c0: int, r0: int) -> None:
        self.rec = rec
        self.t0, self.c0, self.r0 = t0, c0, r0
        self.out_ns = 0
        self.wait = WAIT_OTHER
        self.sleep_ns = 0


class GreenletStats:
    """Clock reads at switches, for the hooks' cost estimate."""

    clock_reads = 0


STATS = GreenletStats()
_states: dict[Any, _State] = {}
_getcurrent: Callable[[], Any] | None = None
_watchers: list[Any] = []
_active = False


def active() -> bool:
    return _active


def gevent_patched() -> bool:
    """True when gevent has monkey-patched this process (its sockets and ``select``)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


def install() -> bool:
    """Follow greenlets if gevent has patched this process; return whether it does. Idempotent."""
    global _active, _getcurrent
    if _active:
        return True
    if not gevent_patched():
        return False
    import gevent
    import greenlet

    _getcurrent = greenlet.getcurrent
    previous = greenlet.gettrace()

    def trace(event: str, args: Any) -> None:
        if event == "switch" or event == "throw":
            _switch(args[0], args[1])
        if previous is not None:
            previous(event, args)

    greenlet.settrace(trace)
    _time_the_poll(gevent.get_hub().loop)
    gevent_sleep = gevent.sleep

    def sleep(seconds: float = 0, *args: Any, **kwargs: Any) -> None:
        """gevent's ``time.sleep``; a request's greenlet sleeping is ``blocking``."""
        state = _states.get(greenlet.getcurrent())
        if state is not None:
            state.sleep_ns = max(0, int(seconds * 1e9))
        wait(WAIT_SLEEP, gevent_sleep, seconds, *args, **kwargs)

    time.sleep = sleep
    _active = True
    return True


def _time_the_poll(loop: Any) -> None:
    """Note when the hub enters and leaves its poll, in the fields the asyncio lag estimate reads."""
    stats = loop_hooks.STATS

    def entering() -> None:
        stats.previous_return_ns = stats.select_returned_ns
        stats.select_entered_ns = perf_counter_ns()

    def returned() -> None:
        stats.select_returned_ns = perf_counter_ns()

    for make, callback in ((loop.prepare, entering), (loop.check, returned)):
        watcher = make(ref=False)  # never keeps the hub alive
        try:
            watcher.priority = 2  # libev's highest: right at the poll, before the other callbacks
        except (AttributeError, ValueError, TypeError):
            pass
        watcher.start(callback)
        _watchers.append(watcher)


def _switch(origin: Any, target: Any) -> None:
    leaving = _states.get(origin)
    entering = _states.get(target)
    if leaving is None and entering is None:
        return
    c, r, t = thread_time_ns(), run_delay_ns(), perf_counter_ns()
    STATS.clock_reads += 1
    if leaving is not None:
        leaving.rec.add_running(t - leaving.t0, c - leaving.c0, r - leaving.r0)
        leaving.out_ns = t
    if entering is not None:
        if entering.out_ns:
            _charge_out(entering, t - entering.out_ns, t)
        entering.out_ns = 0
        entering.t0, entering.c0, entering.r0 = t, c, r


def _charge_out(state: _State, out: int, now: int) -> None:
    rec = state.rec
    kind = state.wait
    if kind == WAIT_DB or kind == WAIT_CONNECT or kind == WAIT_UPSTREAM:
        lag = min(out, loop_hooks._lag_at(now))
        rec.event_loop += lag
        if kind == WAIT_DB:
            rec.db_wait += out - lag
        elif kind == WAIT_UPSTREAM:
            rec.upstream_wait += out - lag
        else:
            rec.db_connect += out - lag
    elif kind == WAIT_SLEEP:  # past the time asked for, the hub was busy elsewhere
        slept = min(out, state.sleep_ns)
        rec.blocking += slept
        rec.event_loop += out - slept
    else:
        rec.event_loop += out


def begin(rec: RequestRecord, t0: int, c0: int, r0: int) -> None:
    """The current greenlet starts *rec* (its clocks read at t0, c0, r0)."""
    if _getcurrent is not None:
        _states[_getcurrent()] = _State(rec, t0, c0, r0)


def end(rec: RequestRecord) -> bool:
    """Close *rec*'s current run; False if the current greenlet is not running it."""
    if _getcurrent is None:
        return False
    g = _getcurrent()
    state = _states.get(g)
    if state is None or state.rec is not rec:
        return False
    c, r, t = thread_time_ns(), run_delay_ns(), perf_counter_ns()
    rec.add_running(t - state.t0, c - state.c0, r - state.r0)
    del _states[g]
    return True


def wait(kind: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; while the current request's greenlet is switched out in it, it waits for *kind*."""
    state = _states.get(_getcurrent()) if _getcurrent is not None else None
    if state is None:
        return fn(*args, **kwargs)
    state.wait = kind
    try:
        return fn(*args, **kwargs)
    finally:
        state.wait = WAIT_OTHER
