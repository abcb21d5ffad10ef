"""The three clocks of the in-worker accounting, read as cheaply as Linux allows.

* wall: ``time.perf_counter_ns`` (0.07 µs a read on this machine);
* this thread's CPU: ``time.thread_time_ns`` (``CLOCK_THREAD_CPUTIME_ID``, 0.8 µs), exact
  for the running thread, unlike schedstat's runtime field, which the kernel only updates at
  ticks and context switches;
* this thread's run delay (runnable, not on a CPU): the second field of
  ``/proc/thread-self/schedstat`` read with ``pread`` on a descriptor opened once per thread
  (2 µs).  For the running thread it is exact, since delay only accrues while off a CPU.

Without schedstat (not Linux, or ``CONFIG_SCHEDSTATS`` off) the run delay reads as 0 and the
time is reported as ``gil_wait`` instead of ``os_run_queue``; ``schedstat_available()`` says so.
"""

from __future__ import annotations

import os
import threading
from time import perf_counter_ns, thread_time_ns

__all__ = ["perf_counter_ns", "thread_time_ns", "run_delay_ns", "schedstat_available"]

_SCHEDSTAT = "/proc/thread-self/schedstat"


class _Fd:
    """A descriptor, closed when this object is freed."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass


class _PerThread(threading.local):
    """The calling thread's schedstat descriptor (-2: not opened yet, -1: unavailable).

    It is held by an :class:`_Fd` in the thread's own locals, which Python frees as the thread
    ends: a worker that starts a thread per request (asgiref's executor under Django's ASGI
    handler) would otherwise leak a descriptor per thread, until ``select`` fails on one above
    1023.
    """

    holder: _Fd = _Fd(-2)


_local = _PerThread()


def run_delay_ns() -> int:
    """Nanoseconds the calling thread has spent runnable but not running, since it started."""
    fd = _local.holder.fd
    if fd == -2:
        try:
            # /proc/thread-self resolves at open time, so the descriptor stays bound to this thread.
            fd = os.open(_SCHEDSTAT, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        _local.holder = _Fd(fd)
    if fd < 0:
        return 0
    try:
        return int(os.pread(fd, 64, 0).split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def schedstat_available() -> bool:
    """True when run delays can be read (Linux with schedstats)."""
    try:
        with open(_SCHEDSTAT, "rb") as f:
            return len(f.read().split()) >= 2
    except OSError:
        return False
