"""Hooks on the calls where a request waits: thread hops, database drivers, HTTP clients, ``time.sleep``.

Each hook finds the request in ``record.current`` and does nothing else when there is none,
so code outside requests (startup, the span exporter's thread) pays one context-variable read.

* asgiref ``SyncToAsync.__call__``: one hop; its wall time minus what the request did on the
  loop meanwhile and minus the sync function's own run is ``thread_hop`` (dispatch, thread
  start, the executor queue, the result's way back).  ``SyncToAsync.thread_handler`` runs the
  sync function on the hop thread; it is timed there with that thread's clocks, so its CPU is
  ``cpu``, its run delay ``os_run_queue``, its psycopg2 waits ``db_wait``.  Call sites (the sync
  function's qualified name: a middleware's ``process_request``, a signal's ``send``, an ORM
  method; the middleware itself behind Django's wrappers; module-qualified outside Django and
  asgiref, see :func:`_site`) are counted per worker.
* psycopg2: a wait callback (``extensions.set_wait_callback``) replaces libpq's blocking waits
  with a timed ``select``: time there is waiting for PostgreSQL (``db_wait``, or ``db_connect``
  while the connection is being set up); driver CPU stays in ``cpu``.
* asyncpg: ``Connection._execute``/``execute``/``_executemany`` and ``connect``: the call's wall
  time minus the request's loop time over it is ``db_wait``/``db_connect``; ``Pool._acquire``
  the same for ``db_connect`` (its part not spent opening a connection is ``pool_wait``).
* httpx (other HTTP services, ``upstream_wait``): ``HTTPTransport.handle_request`` and the
  response body's reads are timed like psycopg2's waits (blocked time: wall minus CPU minus run
  delay); ``AsyncHTTPTransport.handle_async_request`` and the body's reads like asyncpg's
  queries, except that concurrent calls of one request (``asyncio.gather``) are timed as the
  union of their intervals: from the first call in flight to the last one done, minus the
  request's loop time meanwhile (its tasks running or ready: already ``cpu``, ``event_loop``,
  ``os_run_queue``), minus the loop lag of the last answer.  Each interval is counted once.
* ``time.sleep``: ``blocking`` (under ASGI it blocks the whole loop, which the other requests
  see as ``event_loop``).
"""

from __future__ import annotations

import functools
import select
import threading
import time
import types
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

from asyncprof.worker.clocks import perf_counter_ns, run_delay_ns, thread_time_ns
from asyncprof.worker import greenlet_hooks, loop_hooks, switches
from asyncprof.worker.record import RequestRecord, current

HOP_SITES: Counter[str] = Counter()
_hop_thread = threading.local()


def note_hop_signal() -> None:
    """Called from the loop's ``call_soon_threadsafe``: a hop thread is handing its result back."""
    rec = getattr(_hop_thread, "rec", None)
    if rec is not None:
        rec.hop_signal_ns = perf_counter_ns()
        _hop_thread.rec = None


class CallStats:
    """Counts of timed calls, for the hooks' cost estimate."""

    timed_waits = 0


STATS = CallStats()
_original_sleep = time.sleep


#: Modules whose names stay short in hop sites (``CommonMiddleware.process_request``): Django's and
#: asgiref's own functions are well known; everything else (the user's code, third-party
#: packages) is qualified with its module, so a site says where to look.
_SHORT_PACKAGES = frozenset({"django", "asgiref", "builtins"})
#: Cache bounds: keys are functions, classes and (class, function) pairs, normally a few dozen.
#: Code that hops to a new closure per request would grow the caches without bound; they are
#: cleared instead (recomputing a name costs a few microseconds).
_SITE_CACHE_MAX = 4096
_WRAPPED_DEPTH = 32  # a __wrapped__ cycle (a buggy decorator) must not hang the event loop
#: Names by the object they depend on: a function (weakly: closures made per call must not be
#: kept alive by the cache), a bound method's (owner class, function), an instance's class.
_function_sites: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()
_other_sites: dict[Any, str] = {}


def _qualify(module: Any, name: str) -> str:
    """*name* prefixed by *module* unless that is Django's, asgiref's or a builtin."""
    if not isinstance(module, str) or not module or module.partition(".")[0] in _SHORT_PACKAGES:
        return name
    return f"{module}.{name}"


def _unwrap(func: Any) -> Any:
    """The innermost callable behind partials and ``functools.wraps`` chains.

    Django wraps each middleware in ``convert_exception_to_response``'s ``inner`` (which has
    ``__wrapped__``) before ``sync_to_async`` gets it: the middleware is what the site names.
    """
    for _ in range(_WRAPPED_DEPTH):
        if isinstance(func, functools.partial):
            func = func.func
            continue
        if isinstance(func, types.MethodType):
            # A bound method reads attributes through to its function; keep the owner, which
            # names the class, and unwrap the function (a decorated method).
            inner = _unwrap(func.__func__)
            return func if inner is func.__func__ else types.MethodType(inner, func.__self__)
        namespace = getattr(func, "__dict__", None)
        inner = namespace.get("__wrapped__") if isinstance(namespace, dict) else None
        if inner is None:
            return func
        func = inner
    return func


def _site_name(func: Any) -> str:
    """Uncached :func:`_site`."""
    func = _unwrap(func)
    if isinstance(func, (types.MethodType, types.BuiltinMethodType)) and getattr(func, "__self__", None) is not None \
            and not isinstance(func.__self__, types.ModuleType):
        owner = func.__self__
        cls = owner if isinstance(owner, type) else type(owner)  # a classmethod's owner is the class
        name = getattr(func, "__name__", None) or "?"
        return _qualify(cls.__module__, f"{cls.__qualname__}.{name}")
    if isinstance(func, (types.FunctionType, types.BuiltinFunctionType, type)):
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or "?"
        return _qualify(getattr(func, "__module__", None), str(name))
    cls = type(func)  # a callable instance (a middleware object): its class
    return _qualify(cls.__module__, cls.__qualname__)


def _site(func: Any) -> str:
    """A readable name for the callable a hop crosses to, as counted in ``HOP_SITES``.

    Partials and ``functools.wraps`` chains are followed to the innermost callable; a bound
    method is ``Class.method``, a callable instance its class, a function its ``__qualname__``.
    Names are prefixed with their module (``catalog.middleware.RequestTimingMiddleware``) except
    Django's, asgiref's and builtins (``CommonMiddleware.process_request``).  Runs on every hop, on
    the event loop: names are cached by the objects they depend on; never raises.
    """
    try:
        if isinstance(func, types.FunctionType):
            name = _function_sites.get(func)
            if name is None:
                name = _remember(_function_sites, func, _site_name(func))
            return name
        if isinstance(func, types.MethodType):
            owner = func.__self__
            key: Any = (owner if isinstance(owner, type) else type(owner), func.__func__)
        elif isinstance(func, functools.partial) or hasattr(func, "__qualname__") or \
                "__wrapped__" in getattr(func, "__dict__", ()):
            return _site_name(func)  # made per call, or named per object: not cacheable by class
        else:
            key = type(func)  # a callable instance: named by its class
        name = _other_sites.get(key)
        if name is None:
            name = _remember(_other_sites, key, _site_name(func))
        return name
    except Exception:  # a name is never worth failing the request over
        return type(func).__qualname__


def _remember(cache: Any, key: Any, name: str) -> str:
    if len(cache) >= _SITE_CACHE_MAX:
        cache.clear()
    cache[key] = name
    return name


_installed: set[str] = set()  # the call sites hooked in this process (each once)


def _hook(cls: Any, name: str, wrapper: Any, switched: bool) -> None:
    """Set *wrapper* as ``cls.name``: for good, or, *switched*, only while timed requests are in
    flight on the event loop (:func:`asyncprof.worker.loop_hooks.switch_with_timed_requests`)."""
    if switched:
        loop_hooks.switch_with_timed_requests(cls, name, wrapper)
    else:
        setattr(cls, name, wrapper)


def install_asgiref(switched: bool = False) -> bool:
    """Patch asgiref's SyncToAsync and AsyncToSync; False when asgiref is not importable.

    *switched*: the hooks are on only while a timed request is in flight (ASGI workers, whose
    requests start on the event loop; see :func:`_hook`).  Under WSGI a request starts on its
    own thread, with no loop hook to say when, so the hooks stay.
    """
    try:
        from asgiref.sync import AsyncToSync, SyncToAsync
    except ImportError:
        return False
    if "asgiref" in _installed:
        return True
    _installed.add("asgiref")
    original_call = SyncToAsync.__call__
    original_handler = SyncToAsync.thread_handler

    @functools.wraps(original_call)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        # A plain function returning asgiref's own coroutine outside the sample (or outside a
        # request): no extra coroutine frame per hop there.  asgiref marks the SyncToAsync
        # instance itself as a coroutine function, so callers still see one.
        rec = current.get()
        if rec is None or rec.closed:
            return original_call(self, *args, **kwargs)
        return timed_call(rec, self, *args, **kwargs)

    async def timed_call(rec: RequestRecord, self: Any, *args: Any, **kwargs: Any) -> Any:
        if rec.a2s_depth:  # under an async_to_sync of the request's sync thread (see _install_async_to_sync)
            try:
                return await original_call(self, *args, **kwargs)
            finally:
                rec.hops += 1
                HOP_SITES[_site(self.func)] += 1
        t0 = perf_counter_ns()
        busy0 = rec.busy_ns(t0)
        try:
            return await original_call(self, *args, **kwargs)
        finally:
            rec.hops += 1
            HOP_SITES[_site(self.func)] += 1
            _account_hop(rec, t0, busy0)

    def thread_handler(self: Any, loop: Any, exc_info: Any, task_context: Any, func: Any, *args: Any,
                       **kwargs: Any) -> Any:
        def timed_func(child: Callable[[], Any]) -> Any:
            def timed_child() -> Any:  # runs inside the request's copied context
                rec = current.get()
                if rec is None or rec.closed or rec.a2s_depth:
                    return child()
                # No run-delay reads here: Django's hop threads are new for every request, so each
                # would first open its schedstat file, and the sync functions crossed to are short.
                # Their rare preemption shows as gil_wait.
                t0, c0 = perf_counter_ns(), thread_time_ns()
                rec.hop_start_ns = t0
                # async_to_sync calls made by this function (a sync-only middleware calling the rest
                # of the chain) add their time here: it is the loop's, accounted there.
                outer, _hop_thread.nested = getattr(_hop_thread, "nested", None), [0, 0]
                try:
                    return child()
                finally:
                    c1, t1 = thread_time_ns(), perf_counter_ns()
                    nested_wall, nested_cpu = _hop_thread.nested
                    # Run inside another hop's async_to_sync (asgiref's thread-sensitive executor runs
                    # it on the waiting thread): that call's time, this run included, leaves the other.
                    _hop_thread.nested = outer
                    wall = t1 - t0 - nested_wall
                    rec.hop_inner_wall += wall
                    rec.add_running(wall, c1 - c0 - nested_cpu, 0)
                    rec.hop_done_ns = t1
                    _hop_thread.rec = rec  # call_soon_threadsafe, next on this thread, notes the signal

            return func(timed_child)

        return original_handler(self, loop, exc_info, task_context, timed_func, *args, **kwargs)

    _hook(SyncToAsync, "__call__", call, switched)
    _hook(SyncToAsync, "thread_handler", thread_handler, switched)
    _install_async_to_sync(AsyncToSync, switched)
    return True


def _account_hop(rec: RequestRecord, t0: int, busy0: int) -> None:
    """Split a finished ``sync_to_async`` await into thread_hop, gil_wait and event_loop.

    After the hop's function returns (``hop_done_ns``), its thread needs the GIL to hand the
    result back (``hop_signal_ns``, when it calls ``call_soon_threadsafe``): waiting for the GIL
    the loop holds is ``gil_wait``.  The result then waits in the loop's queue until the
    request's task is marked ready (``last_ready_ns``): the loop being busy, ``event_loop``.
    """
    t1 = perf_counter_ns()
    own = max(0, (t1 - t0) - (rec.busy_ns(t1) - busy0))
    rec.hop_waits += own  # busy time for any hop enclosing this one (see RequestRecord.busy_ns)
    done, signal, ready = rec.hop_done_ns, rec.hop_signal_ns, rec.last_ready_ns
    if t0 < done <= signal <= ready:
        gil = min(own, signal - done)
        loop = min(own - gil, ready - signal)
        rec.offcpu += gil  # gil_wait is what off-CPU time no known wait explains
        rec.event_loop += loop
        own -= gil + loop
    rec.thread_hop += own


def _install_async_to_sync(cls: Any, switched: bool) -> None:
    """Count ``async_to_sync`` crossings (sync code calling async code, as under WSGI).

    The calling thread waits while the coroutine runs on a loop in another thread; that wait
    (its off-CPU time over the call, minus known blocking inside it) is ``thread_hop``.  The
    coroutine's own CPU runs on that other thread and is part of the hop, not of ``cpu``.
    """
    original = cls.__call__

    @functools.wraps(original)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        rec = current.get()
        if rec is None or rec.closed:
            return original(self, *args, **kwargs)
        nested = getattr(_hop_thread, "nested", None)
        if nested is not None:
            return _nested_async_to_sync(rec, nested, original, self, *args, **kwargs)
        t0, r0, c0 = perf_counter_ns(), run_delay_ns(), thread_time_ns()
        blocked0 = rec.blocked_known
        # Sync functions the coroutine hops back to (the async ORM's sync_to_async) run on this very
        # thread (asgiref's thread-sensitive executor) or in a pool: either way inside this wait,
        # which is timed here as a whole, so they are not timed again.
        rec.a2s_depth += 1
        try:
            return original(self, *args, **kwargs)
        finally:
            rec.a2s_depth -= 1
            c1, r1, t1 = thread_time_ns(), run_delay_ns(), perf_counter_ns()
            rec.hops += 1
            HOP_SITES[_site(self.awaitable)] += 1
            waited = max(0, (t1 - t0) - (c1 - c0) - (r1 - r0) - (rec.blocked_known - blocked0))
            rec.thread_hop += waited
            rec.blocked_known += waited  # not GIL wait: the thread slept on the hop's future

    _hook(cls, "__call__", call, switched)


def _nested_async_to_sync(rec: RequestRecord, nested: list[int], original: Callable[..., Any], self: Any,
                          *args: Any, **kwargs: Any) -> Any:
    """``async_to_sync`` from a hop thread (ASGI: a sync-only middleware calling the chain below it).

    The coroutine runs as tasks on the request's own loop, whose steps, waits and further hops are
    accounted as usual; sync functions it hops to may even run on this very thread meanwhile
    (asgiref's thread-sensitive executor).  So the whole call leaves the enclosing hop's run
    (*nested*: wall and CPU to subtract), and what the crossing itself costs is already the
    enclosing hop's ``thread_hop`` (its wall minus the request's loop time).  While this thread
    waits, no hop function is running: steps on the loop meanwhile are not overlapped by it.
    """
    t0, c0 = perf_counter_ns(), thread_time_ns()
    rec.hop_start_ns = 0
    try:
        return original(self, *args, **kwargs)
    finally:
        c1, t1 = thread_time_ns(), perf_counter_ns()
        rec.hops += 1
        HOP_SITES[_site(self.awaitable)] += 1
        nested[0] += t1 - t0
        nested[1] += c1 - c0
        rec.hop_start_ns = t1  # the enclosing hop's function runs again from here


def _blocked(fn: Callable[..., Any], *args: Any) -> int:
    """Call ``fn(*args)``; return how long this thread was blocked in it (ns).

    Blocked is off-CPU and not in the run queue: the call's wall time minus this thread's CPU
    and run delay over it.  The CPU of the call itself (the system call, and the clock reads
    inside the interval: a ``time.sleep`` costs ~40 µs of CPU here, a ``select`` ~5 µs) is
    ``cpu``, and the run delay after waking ``os_run_queue``; counted as blocked as well, the
    request's categories would sum to more than its wall time.  The CPU clock is read
    outermost, so the reads' own CPU is never counted as blocked.
    """
    c0, r0, t0 = thread_time_ns(), run_delay_ns(), perf_counter_ns()
    try:
        fn(*args)
    finally:
        t1, r1, c1 = perf_counter_ns(), run_delay_ns(), thread_time_ns()
    return max(0, (t1 - t0) - (c1 - c0) - (r1 - r0))


#: ``select.select`` takes descriptors below this only (glibc's FD_SETSIZE).
_FD_SETSIZE = 1024


def _wait_fd(rlist: list[int], wlist: list[int]) -> None:
    """Wait until psycopg2's one descriptor is ready, as libpq's own wait would.

    ``select.select`` (gevent's once patched: cooperative), or ``poll`` for a descriptor it cannot
    take: a process with a thousand files open (connections piling up, say) must not see its
    queries fail because asyncprof waits for them.
    """
    fd = (rlist or wlist)[0]
    if fd < _FD_SETSIZE or select.select.__module__ != "select":
        select.select(rlist, wlist, [])
        return
    poller = select.poll()
    poller.register(fd, select.POLLIN if rlist else select.POLLOUT)
    poller.poll()


def _timed_select(rec: RequestRecord, rlist: list[int], wlist: list[int], connecting: bool) -> None:
    if greenlet_hooks.active():  # gevent: the select switches to the hub; the switch-out is the wait
        greenlet_hooks.wait(greenlet_hooks.WAIT_CONNECT if connecting else greenlet_hooks.WAIT_DB,
                            select.select, rlist, wlist, [])
        return
    STATS.timed_waits += 1
    blocked = _blocked(_wait_fd, rlist, wlist)
    rec.blocked_known += blocked
    if connecting:
        rec.db_connect += blocked
    else:
        rec.db_wait += blocked


def install_psycopg2() -> bool:
    """Set psycopg2's wait callback (the same protocol psycogreen uses); False without psycopg2."""
    try:
        import psycopg2.extensions as ext
    except ImportError:
        return False
    ready_states = {ext.STATUS_READY, ext.STATUS_BEGIN, ext.STATUS_PREPARED}

    def wait(conn: Any) -> None:
        rec = current.get()
        if rec is not None and rec.closed:
            rec = None
        connecting = conn.status not in ready_states
        if rec is not None and not connecting:
            rec.queries += 1
        while True:
            try:
                state = conn.poll()
                if state == ext.POLL_OK:
                    return
                fd = conn.fileno()
                rlist, wlist = ([fd], []) if state == ext.POLL_READ else ([], [fd])
                if state not in (ext.POLL_READ, ext.POLL_WRITE):
                    raise conn.OperationalError(f"bad state from poll: {state}")
                if rec is None:
                    _wait_fd(rlist, wlist)
                else:
                    _timed_select(rec, rlist, wlist, connecting)
            except KeyboardInterrupt:
                conn.cancel()  # as psycopg2.extras.wait_select does: let the server stop the query
                continue

    global _psycopg2_wait, _set_wait_callback
    _psycopg2_wait, _set_wait_callback = wait, ext.set_wait_callback
    ext.set_wait_callback(wait)
    switches.register(psycopg2_waits)  # followed only by workers that serve one request at a time
    return True


_psycopg2_wait: Callable[[Any], None] | None = None
_set_wait_callback: Callable[[Any], None] | None = None  # psycopg2's, kept so the per-request switch imports nothing


def psycopg2_waits(on: bool) -> None:
    """Set or clear psycopg2's wait callback (process-wide; a setter of :mod:`asyncprof.worker.switches`).

    With a callback psycopg2 runs every query asynchronously and polls from Python: tens of
    microseconds a query more than libpq's own blocking wait.  A single-threaded WSGI worker
    clears it for requests outside the sample, which have nothing to time.
    """
    if _set_wait_callback is not None:
        _set_wait_callback(_psycopg2_wait if on else None)


def _own_wait(rec: RequestRecord, t0: int, busy0: int) -> int:
    """An await region's own wait: its wall time minus the request's loop time, minus loop lag.

    The lag (see ``loop_hooks.loop_lag_ns``) moves to ``event_loop``, once per ready mark: regions
    nest (the pool opens a connection inside ``Pool._acquire``), and the mark that ended the
    inner one often ends the outer one too.  Moved lag counts as busy time (``busy_ns``), so an
    enclosing region's own wait excludes it as well.
    """
    t1 = perf_counter_ns()
    own = max(0, (t1 - t0) - (rec.busy_ns(t1) - busy0))
    if rec.last_ready_ns == rec.lag_mark_ns:
        return own  # this wakeup's lag was charged already (by a nested region)
    lag = min(own, loop_hooks.loop_lag_ns(rec, t0))
    if lag > 0:
        rec.lag_mark_ns = rec.last_ready_ns
        rec.lag_moved += lag
        rec.event_loop += lag
    return own - lag


def _wrap_query(original: Any) -> Any:
    @functools.wraps(original)
    async def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        rec = current.get()
        if rec is None or rec.closed or rec.db_depth:
            return await original(self, *args, **kwargs)
        rec.db_depth += 1
        t0 = perf_counter_ns()
        busy0 = rec.busy_ns(t0)
        try:
            return await original(self, *args, **kwargs)
        finally:
            rec.db_depth -= 1
            rec.queries += 1
            rec.db_wait += _own_wait(rec, t0, busy0)

    return query


def _wrap_connect(original: Any) -> Any:
    @functools.wraps(original)
    async def connect(*args: Any, **kwargs: Any) -> Any:
        rec = current.get()
        if rec is None or rec.closed:
            return await original(*args, **kwargs)
        t0 = perf_counter_ns()
        busy0 = rec.busy_ns(t0)
        try:
            return await original(*args, **kwargs)
        finally:
            own = _own_wait(rec, t0, busy0)
            if rec.acquiring:
                rec.connect_own += own  # Pool._acquire accounts the whole wait
            else:
                rec.db_connect += own

    return connect


def _wrap_acquire(original: Any) -> Any:
    @functools.wraps(original)
    async def acquire(self: Any, *args: Any, **kwargs: Any) -> Any:
        rec = current.get()
        if rec is None or rec.closed or rec.acquiring:
            return await original(self, *args, **kwargs)
        rec.acquiring = True
        rec.connect_own = 0
        t0 = perf_counter_ns()
        busy0 = rec.busy_ns(t0)
        try:
            return await original(self, *args, **kwargs)
        finally:
            rec.acquiring = False
            own = _own_wait(rec, t0, busy0)
            rec.db_connect += own
            rec.pool_wait += max(0, own - rec.connect_own)

    return acquire


def install_asyncpg(switched: bool = False) -> bool:
    """Wrap asyncpg's query, connect and pool-acquire coroutines; False without asyncpg.

    *switched*: the query and pool-acquire wrappers are on only while a timed request is in
    flight (see :func:`install_asgiref`); ``connect`` is bound by each pool as it is created, so
    its wrapper stays.
    """
    try:
        import asyncpg
        import asyncpg.connection
        import asyncpg.pool
    except ImportError:
        return False
    if "asyncpg" in _installed:
        return True
    _installed.add("asyncpg")
    conn_cls = asyncpg.connection.Connection
    for name in ("_execute", "execute", "_executemany"):
        _hook(conn_cls, name, _wrap_query(getattr(conn_cls, name)), switched)
    connect = _wrap_connect(asyncpg.connection.connect)
    asyncpg.connection.connect = connect  # the pool looks it up here when it is created
    asyncpg.connect = connect
    _hook(asyncpg.pool.Pool, "_acquire", _wrap_acquire(asyncpg.pool.Pool._acquire), switched)
    return True


# --- httpx: calls to other HTTP services ------------------------------------------------------


def _upstream_blocking(rec: RequestRecord, fn: Callable[..., Any], *args: Any) -> Any:
    """Call the blocking ``fn(*args)`` (a sync httpx transport call or body read) as an upstream wait.

    Its blocked time (wall minus this thread's CPU and run delay) is ``upstream_wait`` and known
    (not ``gil_wait``); under gevent the request's greenlet is switched out instead, and the
    greenlet hooks charge that time.
    """
    if rec.closed:
        return fn(*args)
    if greenlet_hooks.active():
        return greenlet_hooks.wait(greenlet_hooks.WAIT_UPSTREAM, fn, *args)
    STATS.timed_waits += 1
    c0, r0, t0 = thread_time_ns(), run_delay_ns(), perf_counter_ns()
    try:
        return fn(*args)
    finally:
        t1, r1, c1 = perf_counter_ns(), run_delay_ns(), thread_time_ns()
        blocked = max(0, (t1 - t0) - (c1 - c0) - (r1 - r0))
        rec.upstream_wait += blocked
        rec.blocked_known += blocked


def _upstream_enter(rec: RequestRecord) -> None:
    """An async upstream call (or body read) of *rec* starts; the first of overlapping ones opens the interval."""
    rec.upstream_depth += 1
    if rec.upstream_depth == 1:
        STATS.timed_waits += 1
        t0 = perf_counter_ns()
        rec.upstream_t0, rec.upstream_busy0 = t0, rec.busy_ns(t0)


def _upstream_leave(rec: RequestRecord) -> None:
    """An async upstream call of *rec* ends; the last of overlapping ones charges their union once.

    The union's own wait is its wall time minus the request's loop time over it, minus the last
    answer's loop lag (``_own_wait``).  On a loop the loop hooks do not follow (``async_to_sync``
    runs the coroutine on a loop of its own, while the calling thread waits: ``thread_hop``), the
    request is never ``running``: the wait is then known blocked time, which the hop excludes.
    """
    rec.upstream_depth -= 1
    if rec.upstream_depth == 0:
        own = _own_wait(rec, rec.upstream_t0, rec.upstream_busy0)
        rec.upstream_wait += own
        if not rec.running:
            rec.blocked_known += own


_TimedSyncStream: Any = None
_TimedAsyncStream: Any = None


def _stream_classes(httpx: Any) -> tuple[Any, Any]:
    """Response body streams whose reads are upstream waits (the body can arrive after the head)."""

    class TimedSyncStream(httpx.SyncByteStream):  # type: ignore[misc, name-defined]
        __slots__ = ("_stream", "_rec")

        def __init__(self, stream: Any, rec: RequestRecord) -> None:
            self._stream, self._rec = stream, rec

        def __iter__(self) -> Any:
            chunks = iter(self._stream)
            while True:
                try:
                    chunk = _upstream_blocking(self._rec, next, chunks)
                except StopIteration:
                    return
                yield chunk

        def close(self) -> None:
            self._stream.close()

    class TimedAsyncStream(httpx.AsyncByteStream):  # type: ignore[misc, name-defined]
        __slots__ = ("_stream", "_rec")

        def __init__(self, stream: Any, rec: RequestRecord) -> None:
            self._stream, self._rec = stream, rec

        async def __aiter__(self) -> Any:
            chunks = self._stream.__aiter__()
            rec = self._rec
            while True:
                _upstream_enter(rec)
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    _upstream_leave(rec)
                yield chunk

        async def aclose(self) -> None:
            await self._stream.aclose()

    return TimedSyncStream, TimedAsyncStream


def install_httpx() -> bool:
    """Wrap httpx's default transports (sync and async); False when httpx is not importable."""
    global _TimedSyncStream, _TimedAsyncStream
    try:
        import httpx
    except ImportError:
        return False
    sync_cls, async_cls = httpx.HTTPTransport, httpx.AsyncHTTPTransport
    if getattr(sync_cls.handle_request, "_asyncprof", False):
        return True
    _TimedSyncStream, _TimedAsyncStream = _stream_classes(httpx)
    original_sync, original_async = sync_cls.handle_request, async_cls.handle_async_request

    @functools.wraps(original_sync)
    def handle_request(self: Any, request: Any) -> Any:
        rec = current.get()
        if rec is None or rec.closed:
            return original_sync(self, request)
        rec.upstream_calls += 1
        response = _upstream_blocking(rec, original_sync, self, request)
        response.stream = _TimedSyncStream(response.stream, rec)
        return response

    @functools.wraps(original_async)
    async def handle_async_request(self: Any, request: Any) -> Any:
        rec = current.get()
        if rec is None or rec.closed:
            return await original_async(self, request)
        rec.upstream_calls += 1
        _upstream_enter(rec)
        try:
            response = await original_async(self, request)
        finally:
            _upstream_leave(rec)
        response.stream = _TimedAsyncStream(response.stream, rec)
        return response

    handle_request._asyncprof = True  # type: ignore[attr-defined]
    handle_async_request._asyncprof = True  # type: ignore[attr-defined]
    sync_cls.handle_request = handle_request  # type: ignore[method-assign]
    async_cls.handle_async_request = handle_async_request  # type: ignore[method-assign]
    return True


def sleep(seconds: float) -> None:
    """``time.sleep``, with the time charged to the request as ``blocking``."""
    rec = current.get()
    if rec is None or rec.closed:
        return _original_sleep(seconds)
    blocked = 0
    try:
        blocked = _blocked(_original_sleep, seconds)
    finally:
        rec.blocking += blocked
        rec.blocked_known += blocked


def install_sleep() -> None:
    time.sleep = sleep
