"""Time every task step on the event loop, and when each task became ready to run.

Two hooks on the worker's running loop:

* a task factory wraps each new task's coroutine in :class:`TimedCoroutine`, whose ``send``
  and ``throw`` (one task step each) read the three clocks before and after and charge the
  step to the request in the task's context (``record.current``), unless the task serves a
  request outside the sample (:func:`task_factory`);
* a ``call_soon`` wrapper notes when a task is scheduled to run (a task's step and
  wakeup callbacks carry the task as ``__self__``).  The time from there to the step's start
  is time the request was ready while the loop ran something else: ``event_loop``, minus the
  loop thread's run delay over it (``os_run_queue``).  A request with several tasks (Django
  runs the view in a child task beside a disconnect listener) counts the union: it waits on
  the loop while one of its tasks is ready and none runs.

The factory works on any loop that honours ``set_task_factory`` (asyncio and uvloop);
``call_soon`` can only be replaced on asyncio's pure-Python loops, so under uvloop ready-waits
are not measured (``ready_wait_measured`` False) and land in ``other``.

The ``call_soon``, ``call_soon_threadsafe`` and selector wrappers run for every
callback and loop iteration (dozens per request), yet only timed requests use what they note.
So they are on only while a timed request is in flight on the loop (:func:`follow` as its record
begins, :func:`unfollow` as it closes): with most requests outside the sample, most of the time
the loop runs unwrapped.  A task's first step is scheduled as it is created, so its creation is
its ready mark when the wrappers were off then (``TimedCoroutine.__init__``).
"""

from __future__ import annotations

import asyncio
import collections.abc
import sys
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from asyncprof.worker import call_hooks, sampling
from asyncprof.worker.clocks import perf_counter_ns, run_delay_ns, thread_time_ns
from asyncprof.worker.record import RequestRecord, current


class LoopStats:
    """Totals of the loop thread, for the worker summary and the hooks' cost estimate."""

    steps = 0
    steps_cpu_ns = 0
    # The hooks' own time on the loop thread, timed by the hooks themselves; the clock reads
    # before each step's end timestamp are not in it (the summary adds an estimate).  A stretch
    # longer than PREEMPTED_NS was the thread losing its CPU inside the hook (on a busy machine,
    # often): it counts in ``preempted`` and adds nothing; ``hook_estimate_ns()`` gives it the
    # mean of the others.
    hook_ns = 0
    stretches = 0
    preempted = 0
    ready_marks = 0
    last_rd = 0  # the loop thread's run delay at the latest step start or end
    # The loop's latest selector call (entered, returned) and the return before it.
    select_entered_ns = 0
    select_returned_ns = 0
    previous_return_ns = 0

    def hook_estimate_ns(self) -> float:
        """The hooks' own time, preempted stretches counted at the mean of the others."""
        timed = self.stretches - self.preempted
        return self.hook_ns * self.stretches / timed if timed else 0.0


#: A hook stretch longer than this was preempted (each takes a few microseconds on its CPU).
PREEMPTED_NS = 20_000
#: A selector call shorter than this did not sleep: its events were already waiting.
SLEPT_NS = 50_000


STATS = LoopStats()


class TimedCoroutine(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine wrapper that accounts each step of the task running it."""

    __slots__ = ("_coro", "rec", "created_ns", "ready_ns", "ready_rd", "is_ready", "t0", "c0", "r0", "dormant",
                 "profiler")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        # Tasks created inside a request belong to it; the request's first task gets its record
        # during its first step (see TimedCoroutine._step and accounting.wrap_asgi).
        self.rec: RequestRecord | None = current.get()
        self.created_ns = perf_counter_ns()
        # The task's first step is scheduled now (Task.__init__ calls call_soon), whether or not the
        # call_soon wrapper is on (see follow()); _mark_ready overwrites both when it is.
        self.ready_ns = self.created_ns
        self.ready_rd = STATS.last_rd
        self.is_ready = False
        self.t0 = self.c0 = self.r0 = 0
        # True once the task is known to run a request outside the sample (untime_current_task,
        # see asyncprof.worker.sampling): its steps are passed through untimed from then on.
        self.dormant = False
        # A pyinstrument Profiler running during this task's steps only (see profile_steps).
        self.profiler: Any = None

    def send(self, value: Any) -> Any:
        if self.dormant:
            return self._coro.send(value)
        return self._step(self._coro.send, value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self.dormant:
            return self._coro.throw(typ, val, tb) if val is not None or tb is not None else self._coro.throw(typ)
        if val is None and tb is None:
            return self._step(self._coro.throw, typ)
        return self._step(lambda _: self._coro.throw(typ, val, tb), None)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()

    def __getattr__(self, name: str) -> Any:  # cr_frame, cr_code, __qualname__ for asyncio's reprs
        return getattr(self._coro, name)

    def _step(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        t0 = perf_counter_ns()
        r0 = run_delay_ns()
        c0 = thread_time_ns()
        self.t0, self.c0, self.r0 = t0, c0, r0
        # The baseline of marks made during this step (most are: a step creates tasks and
        # resolves futures); left at the previous step's end, it would count the loop thread's
        # run delay from before the step as the woken task's wait.
        STATS.last_rd = r0
        rec = self.rec
        if rec is not None and not rec.closed:
            if self.is_ready:
                self.is_ready = False
                rec.ready_tasks -= 1
            if rec.ready_since:
                wait = t0 - rec.ready_since
                delay = _ready_delay(wait, r0, rec.ready_rd)
                rec.ready_wall += wait
                rec.event_loop += max(0, wait - delay)
                rec.run_delay += delay
                rec.ready_since = 0
            rec.running = True
            rec.step_t0, rec.step_c0, rec.step_r0 = t0, c0, r0
        else:
            self.is_ready = False
        _charge(perf_counter_ns() - t0)
        if self.profiler is not None:
            self.profiler.start(caller_frame=sys._getframe())
        try:
            return fn(arg)
        finally:
            if self.profiler is not None and self.profiler.is_running:
                self.profiler.stop()
            c1 = thread_time_ns()
            r1 = run_delay_ns()
            t1 = perf_counter_ns()
            STATS.steps += 1
            STATS.steps_cpu_ns += c1 - c0
            STATS.last_rd = r1
            rec = self.rec
            if rec is None:
                rec = self.rec = current.get()  # the request's first task: the record began mid-step
            if rec is not None and not rec.closed:
                t_start, c_start, r_start = (rec.step_t0, rec.step_c0, rec.step_r0) if rec.running else (t0, c0, r0)
                rec.end_step(t_start, t1, c1 - c_start, r1 - r_start)
                rec.running = False
                if rec.ready_tasks > 0:
                    rec.ready_since, rec.ready_rd = t1, r1
            _charge(perf_counter_ns() - t1)


def _charge(ns: int) -> None:
    """Add one hook stretch to the hooks' own time, unless it was preempted (see LoopStats)."""
    STATS.stretches += 1
    if ns > PREEMPTED_NS:
        STATS.preempted += 1
    else:
        STATS.hook_ns += ns


def _ready_delay(wait: int, rd_now: int, rd_marked: int) -> int:
    """The loop thread's run delay over a ready wait of *wait* ns, never more than the wait.

    The run delay at the mark is the loop thread's value at its latest step boundary (not
    re-read at the mark, see ``_mark_ready``), so the difference can include run delay from
    before the task became ready; capped, the ready wait still splits exactly into
    ``event_loop`` + ``os_run_queue``.
    """
    return min(wait, max(0, rd_now - rd_marked))


def task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> "asyncio.Task[Any]":
    """The loop's task factory: the usual Task, around a timed coroutine unless it serves a
    request outside the sample.

    Such a task is marked (``_OUTSIDE``, an attribute of the Task) and the mark passes to the tasks
    it creates: a request's own tasks, or a server's task for a request whose ``traceparent`` says
    it is outside the sample (:func:`_outside_the_sample`), or one the accounting found outside
    in its first step (:func:`untime_current_task`).  No context variable marks such a request:
    asgiref copies every variable of the context back after each thread hop, so one more would
    cost every hop of every request.
    """
    parent = asyncio.current_task(loop)
    if (parent is not None and getattr(parent, _OUTSIDE, False)) or (parent is None and _outside_the_sample(coro)):
        task = asyncio.Task(coro, loop=loop, **kwargs)
        setattr(task, _OUTSIDE, True)
        return task
    # (The ABC test last: it is the slow one.)
    if type(coro) is not TimedCoroutine and isinstance(coro, collections.abc.Coroutine):
        coro = TimedCoroutine(coro)
    return asyncio.Task(coro, loop=loop, **kwargs)


#: The attribute that marks a Task serving a request outside the sample (see task_factory).
_OUTSIDE = "_asyncprof_outside_sample"


#: The code objects of servers' per-request coroutines whose ``self.scope`` is the request's
#: ASGI scope (uvicorn's ``RequestResponseCycle.run_asgi``, httptools and h11), found by
#: :func:`install` (the server has imported its protocol module before its loop runs).
_REQUEST_CODES: dict[Any, bool] = {}
_REQUEST_MODULES = ("uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.http.h11_impl")


def _outside_the_sample(coro: Any) -> bool:
    """Whether *coro*, about to become a task, is a server's request known to be outside the sample.

    Servers create a request's task before the application sees the request; for uvicorn's the
    scope is already there, on the not-yet-started coroutine's ``self``.  Anything else (another
    server, a background task) is not known to be outside, and is timed until the accounting
    learns otherwise in its first step (:func:`untime_current_task`).
    """
    code = getattr(coro, "cr_code", None)
    if code is None or code not in _REQUEST_CODES:
        return False
    scope = getattr(coro.cr_frame.f_locals.get("self"), "scope", None)
    if not isinstance(scope, dict) or scope.get("type") != "http":
        return False
    for name, value in scope.get("headers", ()):
        if name == b"traceparent":
            return not sampling.sampled(value)
    return False


def _find_request_codes() -> None:
    _REQUEST_CODES.clear()
    for name in _REQUEST_MODULES:
        module = sys.modules.get(name)
        cycle = getattr(module, "RequestResponseCycle", None)
        run_asgi = getattr(cycle, "run_asgi", None)
        if run_asgi is not None:
            _REQUEST_CODES[run_asgi.__code__] = True


def _current_timed() -> TimedCoroutine | None:
    """The running task's TimedCoroutine, or None when no task runs or its coroutine is not timed."""
    task = asyncio.current_task()
    coro = task.get_coro() if task is not None else None
    return coro if type(coro) is TimedCoroutine else None


def untime_current_task() -> None:
    """The running task serves a request outside the sample: its steps are not timed from now on,
    and the tasks it creates are plain ones (see :func:`task_factory`)."""
    task = asyncio.current_task()
    if task is None:
        return
    try:
        setattr(task, _OUTSIDE, True)
    except AttributeError:  # a Task class without instance attributes: its children are timed, as before
        pass
    coro = task.get_coro()
    if type(coro) is TimedCoroutine:
        coro.dormant = True


def profile_steps(profiler: Any) -> bool:
    """Run *profiler* (a running pyinstrument Profiler) during the current task's steps only, until
    :func:`end_profile_steps`; False if the task is not timed (then the caller profiles as it can).

    A profiler's hook slows every call made while it runs, and on an event loop that is every
    request's code, not only the profiled one's: started at each of the task's steps and stopped
    at its end (pyinstrument combines the pieces into one session), it costs the other requests
    nothing.  The profile then holds the request's own time on the loop, not its awaits (the
    accounting's breakdown has those).
    """
    coro = _current_timed()
    if coro is None or coro.dormant:
        return False
    coro.profiler = profiler  # the current step's end stops it, the next step's start restarts it
    return True


def end_profile_steps() -> None:
    """The current task's profile is complete (pairs with :func:`profile_steps`)."""
    coro = _current_timed()
    if coro is not None:
        coro.profiler = None


def _lag_at(now: int) -> int:
    """How long the event being handled now may have waited for the loop (see ``loop_lag_ns``)."""
    if not STATS.select_returned_ns:
        return 0
    lag = now - STATS.select_returned_ns
    if STATS.select_returned_ns - STATS.select_entered_ns < SLEPT_NS and STATS.previous_return_ns:
        # The selector had the event at once: it arrived while the loop was busy between the
        # previous return and this call, at an unknown instant; its midpoint is unbiased.
        lag += (STATS.select_entered_ns - STATS.previous_return_ns) // 2
    return lag


def _mark_ready(callback: Any) -> None:
    """Note that the task whose step or wakeup *callback* is became ready (timed tasks only)."""
    task = getattr(callback, "__self__", None)
    if not isinstance(task, asyncio.Task):
        return
    coro = task.get_coro()
    if type(coro) is not TimedCoroutine or coro.is_ready or coro.dormant:  # not isinstance: an ABC, slow
        return
    # Timed from here: the tests above are a fraction of a microsecond, less than timing them costs.
    now = perf_counter_ns()
    STATS.ready_marks += 1
    coro.is_ready = True
    coro.ready_ns, coro.ready_rd = now, STATS.last_rd
    rec = coro.rec
    if rec is not None and not rec.closed:
        rec.last_ready_ns, rec.last_lag_ns = now, _lag_at(now)
        rec.ready_tasks += 1
        if not rec.running and not rec.ready_since:
            # The loop thread's run delay at the latest step boundary stands in for "now":
            # reading schedstat here too would double the hooks' cost for a few microseconds.
            rec.ready_since, rec.ready_rd = now, STATS.last_rd
    _charge(perf_counter_ns() - now)


#: CPython's flag for types whose attributes cannot be set (C types such as uvloop's loop).
_IMMUTABLE_TYPE = 1 << 8


def _patchable(obj: Any) -> bool:
    """Whether *obj*'s class accepts new attributes, tested without touching the instance.

    Reading ``obj.__dict__`` (or setting an attribute the class does not know) turns the
    instance's inline attribute values into a dict for the rest of its life, and every
    specialised attribute access on it takes the generic path from then on: measured under
    valgrind, half a million instructions more per request on a loop whose ``__dict__`` was
    read once, about 7 % of an ASGI request (``scripts/count-instructions``).
    """
    return not type(obj).__flags__ & _IMMUTABLE_TYPE


class _Wrappers:
    """Class-level wrappers that are on while timed requests are in flight: the loop's and its
    selector's methods, and the hooks other modules switch with them (:func:`switch_with_timed_requests`).

    They are set on the classes, not the instances (see :func:`_patchable`), and the loop's pass
    calls on any other loop or selector straight through.  Setting and removing a class attribute
    invalidates the interpreter's caches for that class once each way; that happens as the first
    timed request starts and the last one ends, not per callback.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.selector: Any = None
        self.attrs: dict[str, Any] = {}  # the loop's method name -> wrapper, set on the owner's class
        self.saved: list[tuple[type, str, Any]] = []  # (class, name, its own attribute or _MISSING), in order set
        self.in_flight = 0

    def entries(self) -> list[tuple[type, str, Any]]:
        """What :meth:`on` sets: the current loop's wrappers, then the switched hooks."""
        out = [(type(self.selector if name == "select" else self.loop), name, wrapper)
               for name, wrapper in self.attrs.items()] if self.loop is not None else []
        return out + _SWITCHED

    def on(self) -> None:
        # The selector times noted while the wrappers were off are stale: no lag from them.
        STATS.select_entered_ns = STATS.select_returned_ns = STATS.previous_return_ns = 0
        for cls, name, wrapper in self.entries():
            self.set(cls, name, wrapper)

    def set(self, cls: type, name: str, wrapper: Any) -> None:
        """Set *wrapper* as ``cls.name``, remembering what it covers for :meth:`off`."""
        self.saved.append((cls, name, cls.__dict__.get(name, _MISSING)))
        setattr(cls, name, wrapper)

    def off(self) -> None:
        for cls, name, own in reversed(self.saved):  # reversed: two hooks on one attribute unwind in order
            if own is _MISSING:
                delattr(cls, name)  # uncovers the inherited method again
            else:
                setattr(cls, name, own)
        self.saved.clear()


#: Hooks of other modules (the thread hops', the asyncpg queries') that only timed requests use:
#: (class, attribute, wrapper), set with the loop's wrappers (see switch_with_timed_requests).
_SWITCHED: list[tuple[type, str, Any]] = []


def switch_with_timed_requests(cls: type, name: str, wrapper: Any) -> None:
    """Make *wrapper* ``cls.name`` only while a timed request is in flight in this process.

    For class-level hooks that do nothing for a request outside the sample but still cost a call
    (asgiref's ``SyncToAsync``: about 10,000 instructions a hop, ``scripts/count-instructions``):
    with most requests outside the sample, most of the time the class is left as it was.  The
    hook must take its short way for calls outside a timed request, as it will run for those
    that overlap one.  Anything that must be seen from a request's start (its first task) cannot
    be switched this way: the request is known to be timed only once it runs.
    """
    entry = (cls, name, wrapper)
    if entry in _SWITCHED:
        return
    _SWITCHED.append(entry)
    if _WRAPPERS.in_flight:
        _WRAPPERS.set(cls, name, wrapper)


_MISSING = object()
_WRAPPERS = _Wrappers()


def install(loop: asyncio.AbstractEventLoop) -> bool:
    """Install the hooks on *loop*; return whether ready-waits can be measured on it.

    The task factory stays; the other wrappers are prepared here and switched on by
    :func:`follow` (see the module's docstring).
    """
    if loop.get_task_factory() is None:
        loop.set_task_factory(task_factory)  # type: ignore[arg-type]
    _find_request_codes()
    # The baseline of the first ready mark, before any timed step has set it (0 would charge
    # the thread's whole run delay since it started to the first request).
    STATS.last_rd = run_delay_ns()
    if _WRAPPERS.saved:
        _WRAPPERS.off()  # a new loop (tests make one each) while the last one was followed
    _WRAPPERS.__init__()  # a new loop: nothing of the last one's
    if not _patchable(loop):
        return False  # uvloop: a C type, call_soon cannot be replaced
    loop_class = type(loop)
    original = loop_class.call_soon

    def call_soon(self: Any, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
        # Called for every callback the loop schedules while a timed request is in flight:
        # _mark_ready's first test is inlined, so callbacks that are no task's step cost one getattr.
        if self is _WRAPPERS.loop and isinstance(getattr(callback, "__self__", None), asyncio.Task):
            _mark_ready(callback)
        return original(self, callback, *args, context=context)

    original_threadsafe = loop_class.call_soon_threadsafe

    def call_soon_threadsafe(self: Any, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
        if self is _WRAPPERS.loop:
            call_hooks.note_hop_signal()
        return original_threadsafe(self, callback, *args, context=context)

    _WRAPPERS.loop = loop
    _WRAPPERS.attrs = {"call_soon": call_soon, "call_soon_threadsafe": call_soon_threadsafe}
    selector = getattr(loop, "_selector", None)
    if selector is not None and _patchable(selector):
        original_select = type(selector).select

        def select(self: Any, timeout: float | None = None) -> Any:
            if self is not _WRAPPERS.selector:
                return original_select(self, timeout)
            STATS.previous_return_ns = STATS.select_returned_ns
            STATS.select_entered_ns = perf_counter_ns()
            try:
                return original_select(self, timeout)
            finally:
                STATS.select_returned_ns = perf_counter_ns()

        _WRAPPERS.selector = selector
        _WRAPPERS.attrs["select"] = select
    return True


def follow() -> None:
    """A timed request's record began on this loop: the wrappers are on until its last one ends."""
    _WRAPPERS.in_flight += 1
    if _WRAPPERS.in_flight == 1:
        _WRAPPERS.on()


def unfollow() -> None:
    """A timed request's record closed (pairs with :func:`follow`)."""
    if _WRAPPERS.in_flight > 0:
        _WRAPPERS.in_flight -= 1
        if _WRAPPERS.in_flight == 0:
            _WRAPPERS.off()


def loop_lag_ns(rec: RequestRecord, since: int) -> int:
    """How long the result that last woke the request waited for the loop, if it woke after *since*.

    An awaited result (a database answer, a hop's return) arrives as a selector event.  If the
    loop was busy running other requests' code when it arrived, it waits until the loop next
    polls, and then behind every callback queued before it.  The second part is exact (selector
    return to the request being marked ready); the first is known only to lie between the
    previous selector return and the call that found the event at once, and is estimated as
    half that stretch.  This time is the loop being busy, not the database or the hop.
    """
    if rec.last_ready_ns > since:
        return min(rec.last_lag_ns, rec.last_ready_ns - since)
    return 0


def first_wait(rec: RequestRecord) -> None:
    """Charge the request's own task's wait before its first step (called as the record starts).

    From here until :func:`finish_running` closes the record the loop's wrappers are on (:func:`follow`).
    """
    follow()
    coro = _current_timed()
    if coro is not None:
        coro.rec = rec
        rec.running = True
        rec.step_t0, rec.step_c0, rec.step_r0 = coro.t0, coro.c0, coro.r0
        if coro.ready_ns and coro.ready_ns < coro.t0:
            wait = coro.t0 - coro.ready_ns
            delay = _ready_delay(wait, coro.r0, coro.ready_rd)
            rec.ready_wall += wait
            rec.event_loop += max(0, wait - delay)
            rec.run_delay += delay


def request_start_ns() -> int | None:
    """When the running task was created (the server took the request), if it is timed."""
    coro = _current_timed()
    return coro.created_ns if coro is not None else None


def finish_running(rec: RequestRecord) -> None:
    """Close the record's in-progress step at the current instant (the response is complete).

    Called once per record begun by :func:`first_wait`, whose :func:`follow` it ends.
    """
    unfollow()
    if rec.running:
        c1 = thread_time_ns()
        r1 = run_delay_ns()
        t1 = perf_counter_ns()
        rec.end_step(rec.step_t0, t1, c1 - rec.step_c0, r1 - rec.step_r0)
        rec.running = False
