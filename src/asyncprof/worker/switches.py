"""Process-wide instruments that a one-request-at-a-time worker turns off outside the sample.

Some instruments cannot tell a request outside the sample from one inside it at the place they
run: psycopg2's wait callback (the accounting's database timer, :mod:`asyncprof.worker.call_hooks`)
and OTel's traced cursor class (its database spans) are set per process or per connection, and
cost tens of microseconds a query even when they have nothing to record.  Where each worker
process serves one request at a time on one thread (gunicorn's sync worker,
:data:`asyncprof.worker.env.ONE_AT_A_TIME`), they can be switched instead: off for a request
outside the sample, on for one inside it.

The switch moves only when the sample state changes from one request to the next (:func:`follow`):
with most requests outside the sample, a worker switches twice around each sampled request and
does nothing otherwise, and a streaming response's queries run in the state of their own request.

An instrument registers a setter with :func:`register`; the setter is called with the new state
on every change, and once at registration if the switch is off by then.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["follow", "gated_cursor_class", "gated_method", "is_on", "register", "track_psycopg2_connections"]

_on = True
_setters: list[Callable[[bool], None]] = []


def register(setter: Callable[[bool], None]) -> None:
    """Call *setter(on)* whenever the switch changes state (and now, if it is off); once per setter."""
    if setter in _setters:
        return
    _setters.append(setter)
    if not _on:
        setter(False)


def follow(in_sample: bool) -> None:
    """Put the switch in the state of the request about to run: on inside the sample, off outside."""
    global _on
    if in_sample is _on:
        return
    _on = in_sample
    for setter in _setters:
        setter(in_sample)


def is_on() -> bool:
    """Whether the instruments are on (the last request followed was in the sample, or none was)."""
    return _on


def track_psycopg2_connections(psycopg2: Any, gate: Callable[[], bool] | None = None) -> None:
    """Switch the cursor class of every psycopg2 connection opened from now on.

    OTel's psycopg2 instrumentation wraps ``psycopg2.connect`` so that each new connection makes
    traced cursors, whose ``execute`` consults the OTel context before calling the real one.  This
    wraps it once more: each connection's traced cursor class is remembered with the class it
    derives from, and while the switch is off the connection makes plain cursors of that class.
    A connection whose cursor class someone else has changed since is left alone.

    With *gate* (workers whose requests overlap, ASGI), nothing is switched: each connection makes
    cursors that ask ``gate()`` at every ``execute``, ``executemany`` and ``callproc`` whether to
    take the traced way or the plain one (:func:`gated_cursor_class`).
    """
    instrumented_connect = psycopg2.connect
    if getattr(instrumented_connect, "_asyncprof_switched", False):
        return
    # connection -> (traced cursor class, the class it derives from); gone with the connection
    factories: weakref.WeakKeyDictionary[Any, tuple[type, type]] = weakref.WeakKeyDictionary()

    def connect(*args: Any, **kwargs: Any) -> Any:
        conn = instrumented_connect(*args, **kwargs)
        traced = conn.cursor_factory
        if isinstance(traced, type) and traced.__bases__:
            if gate is not None:
                conn.cursor_factory = gated_cursor_class(traced, traced.__bases__[0], gate)
                return conn
            factories[conn] = (traced, traced.__bases__[0])
            if not _on:
                conn.cursor_factory = traced.__bases__[0]
        return conn

    def switch(on: bool) -> None:
        for conn, (traced, plain) in list(factories.items()):
            if conn.cursor_factory is (plain if on else traced):
                conn.cursor_factory = traced if on else plain

    connect._asyncprof_switched = True  # type: ignore[attr-defined]
    psycopg2.connect = connect
    if gate is None:
        register(switch)


def gated_cursor_class(traced: type, plain: type, gate: Callable[[], bool]) -> type:
    """A cursor class that runs each call through *traced* when ``gate()`` is true, else *plain*.

    For a request outside the sample the plain method is called directly: no OTel wrapper, no
    context lookup beyond the gate's own.
    """
    names = ("execute", "executemany", "callproc")
    methods = {name: gated_method(getattr(plain, name), getattr(traced, name), gate) for name in names}
    return type(f"Gated{traced.__name__}", (traced,), methods)


def gated_method(plain: Any, traced: Any, gate: Callable[[], bool]) -> Callable[..., Any]:
    """A method that calls *traced* when ``gate()`` is true, else *plain*; both are taken as
    descriptors (functions, C method descriptors, or OTel's wrapt wrappers) and bound to the
    instance at the call."""
    def gated(self: Any, *args: Any, **kwargs: Any) -> Any:
        return (traced if gate() else plain).__get__(self, type(self))(*args, **kwargs)

    gated.__name__ = getattr(plain, "__name__", "gated")
    return gated
