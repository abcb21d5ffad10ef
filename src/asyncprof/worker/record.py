"""One request's running account, and the buffered writer of finished ones.

A :class:`RequestRecord` lives in the ``current`` context variable from the moment the
worker takes a request until its last body byte is handed to the server.  The hooks add
nanoseconds to its fields as they happen; :meth:`RequestRecord.row` turns it into one line
of ``accounting/<pid>.tsv`` (format: :mod:`asyncprof.worker.record_format`).
"""

from __future__ import annotations

import os
import threading
from contextvars import ContextVar
from pathlib import Path
from time import thread_time_ns
from typing import Any

from asyncprof.worker.record_format import COLUMNS

current: ContextVar["RequestRecord | None"] = ContextVar("asyncprof_request", default=None)


class RequestRecord:
    """Counters of one request, in nanoseconds unless named otherwise.

    Time while the request runs (its task steps, its thread-hop code, its WSGI thread) is split
    by the clocks into ``cpu``, ``run_delay`` and off-CPU; known blocking calls (database waits
    in psycopg2, sync upstream HTTP calls, ``time.sleep``) are added to ``blocked_known`` as well
    as to their own field, so what remains of off-CPU is ``gil_wait``.
    """

    __slots__ = (
        "trace_id", "start_unix", "name", "start_ns", "end_ns", "closed", "span",
        "cpu", "run_delay", "offcpu", "blocked_known",
        "db_wait", "db_connect", "pool_wait", "blocking", "queries", "hops", "thread_hop",
        "event_loop", "ready_wall", "steps_wall", "hop_inner_wall",
        "running", "step_t0", "step_c0", "step_r0", "ready_tasks", "ready_since", "ready_rd",
        "db_depth", "acquiring", "connect_own", "last_ready_ns", "last_lag_ns", "hop_done_ns", "hop_signal_ns",
        "hop_start_ns", "lag_moved", "lag_mark_ns", "hop_waits", "a2s_depth",
        "upstream_wait", "upstream_calls", "upstream_depth", "upstream_t0", "upstream_busy0",
    )  # fmt: skip

    def __init__(self, trace_id: str, name: str, start_unix: float, start_ns: int) -> None:
        self.trace_id = trace_id
        self.name = name
        self.start_unix = start_unix
        self.start_ns = start_ns
        self.end_ns = 0
        self.closed = False
        self.span: Any = None
        self.cpu = self.run_delay = self.offcpu = self.blocked_known = 0
        self.db_wait = self.db_connect = self.pool_wait = self.blocking = 0
        self.queries = self.hops = 0
        self.thread_hop = self.event_loop = self.ready_wall = self.steps_wall = self.hop_inner_wall = 0
        # State of the loop-side accounting (ASGI): is one of the request's tasks on the loop
        # now, since when, and how many of its tasks are ready to run.
        self.running = False
        self.step_t0 = self.step_c0 = self.step_r0 = 0
        self.ready_tasks = 0
        self.ready_since = 0
        self.ready_rd = 0
        self.db_depth = 0
        self.acquiring = False
        self.connect_own = 0
        self.last_ready_ns = self.last_lag_ns = 0
        self.hop_done_ns = self.hop_signal_ns = 0  # the latest hop's function returned / its thread signalled the loop
        self.hop_start_ns = 0  # the latest hop's function started on its thread
        self.lag_moved = 0  # loop lag the await regions moved to event_loop (see call_hooks._own_wait)
        # Wall time finished sync_to_async awaits have charged (thread_hop, gil_wait, event_loop): an
        # enclosing hop (a sync-only middleware's, whose chain below hops again) must not charge it twice.
        self.hop_waits = 0
        # async_to_sync calls in progress from the request's own sync thread (WSGI): that thread's
        # time is accounted as a whole, waits included, so hops back to it are counted, not timed.
        self.a2s_depth = 0
        self.lag_mark_ns = 0  # the ready mark whose lag was moved last
        self.upstream_wait = self.upstream_calls = 0
        # Async upstream calls in flight (concurrent ones overlap), and when the first of them started
        # with the request's busy_ns() then: their union is timed once (see call_hooks._upstream_enter).
        self.upstream_depth = 0
        self.upstream_t0 = self.upstream_busy0 = 0

    def end_step(self, t_start: int, t1: int, cpu: int, run_delay: int) -> None:
        """Account a step of the request's code on the loop thread, from *t_start* to *t1*.

        A hop's function can run while the step that dispatched it has not ended yet: starting
        the executor's thread releases the GIL, the new thread takes it and runs the function,
        and the loop thread waits (for the GIL, or in the run queue) to finish its step.  That
        stretch is the request running its sync code (``hop_inner_wall``, charged by the hop
        thread); counted for the waiting step too, the request's categories would sum to more
        than its wall time.  So the overlap leaves the step's off-CPU time, then its run delay;
        what the loop thread spent on CPU meanwhile, the hop thread spent waiting for the GIL,
        and that part leaves the request's off-CPU total (which the hop thread adds to).
        """
        wall = t1 - t_start
        hop_start = self.hop_start_ns
        if hop_start and hop_start < t1:
            hop_end = self.hop_done_ns if self.hop_done_ns >= hop_start else t1  # else: still running
            overlap = min(hop_end, t1) - max(hop_start, t_start)
            if overlap > 0:
                idle = max(0, wall - cpu - run_delay)
                from_idle = min(overlap, idle)
                from_delay = min(overlap - from_idle, run_delay)
                wall -= from_idle + from_delay
                run_delay -= from_delay
                self.offcpu -= overlap - from_idle - from_delay
        self.steps_wall += wall
        self.add_running(wall, cpu, run_delay)

    def add_running(self, wall: int, cpu: int, run_delay: int) -> None:
        """Account an interval in which this request's code held its thread."""
        self.cpu += cpu
        self.run_delay += run_delay
        self.offcpu += wall - cpu - run_delay

    def busy_ns(self, now: int) -> int:
        """Wall time so far in which the request ran on the loop or waited for it (ASGI).

        An ``await`` region's own wait is its wall time minus the growth of this value over the
        region (which includes ``hop_inner_wall`` and the loop lag already moved to event_loop).
        """
        busy = self.steps_wall + self.ready_wall + self.hop_inner_wall + self.lag_moved + self.hop_waits
        if self.running:
            busy += now - self.step_t0
        return busy

    def gil_wait(self) -> int:
        return max(0, self.offcpu - self.blocked_known)

    def row(self) -> str:
        """The record's line of the accounting file (without newline); integer microseconds."""
        values = (
            self.trace_id,
            f"{self.start_unix:.6f}",
            self.name.replace("\t", " ").replace("\n", " "),
            (self.end_ns - self.start_ns) // 1000,
            self.cpu // 1000,
            self.db_wait // 1000,
            self.db_connect // 1000,
            self.event_loop // 1000,
            max(0, self.thread_hop) // 1000,
            self.gil_wait() // 1000,
            self.run_delay // 1000,
            self.blocking // 1000,
            self.hops,
            self.queries,
            self.pool_wait // 1000,
            self.upstream_wait // 1000,
            self.upstream_calls,
        )
        return "\t".join(map(str, values))

    def attributes(self) -> dict[str, float]:
        """The breakdown as span attributes (milliseconds), so it shows in Jaeger."""
        ms = 1e-6
        return {
            "asyncprof.wall_ms": (self.end_ns - self.start_ns) * ms,
            "asyncprof.cpu_ms": self.cpu * ms,
            "asyncprof.db_wait_ms": self.db_wait * ms,
            "asyncprof.db_connect_ms": self.db_connect * ms,
            "asyncprof.upstream_wait_ms": self.upstream_wait * ms,
            "asyncprof.event_loop_ms": self.event_loop * ms,
            "asyncprof.thread_hop_ms": max(0, self.thread_hop) * ms,
            "asyncprof.gil_wait_ms": self.gil_wait() * ms,
            "asyncprof.os_run_queue_ms": self.run_delay * ms,
            "asyncprof.blocking_ms": self.blocking * ms,
            "asyncprof.hops": self.hops,
            "asyncprof.queries": self.queries,
            "asyncprof.upstream_calls": self.upstream_calls,
        }


class RecordWriter:
    """Append finished records to ``<dir>/<pid>.tsv`` in batches.

    Batches keep file writes off most requests; ``flush`` runs every ``batch`` records and when
    the worker exits, so a killed worker loses at most one batch.  Threaded workers (gthread,
    granian's WSGI threads) finish requests on several threads, so the batch is only touched
    under a lock (uncontended, a fraction of a microsecond).
    """

    def __init__(self, directory: Path, batch: int = 512) -> None:
        self.path = directory / f"{os.getpid()}.tsv"
        self.batch = batch
        self.lines: list[str] = []
        self.written = 0
        self.cpu_ns = 0  # the flushes' CPU (formatting a row is the request's own, in add())
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.write_text("\t".join(COLUMNS) + "\n")

    def add(self, record: RequestRecord) -> None:
        row = record.row()
        with self._lock:
            self.lines.append(row)
            full = len(self.lines) >= self.batch
        if full:
            self.flush()

    def flush(self) -> None:
        if not self.lines:
            return
        with self._lock:
            lines, self.lines = self.lines, []
            if not lines:
                return
            c0 = thread_time_ns()
            self.written += len(lines)
            with open(self.path, "a") as f:
                f.write("\n".join(lines) + "\n")
            self.cpu_ns += thread_time_ns() - c0


#: The record of every WSGI request outside the sample (see :mod:`asyncprof.worker.sampling`):
#: already closed, so each hook's ``rec is None or rec.closed`` test takes its short way.  (An ASGI
#: request outside the sample has no record at all; its tasks are marked instead, see
#: ``loop_hooks.task_factory``.)
UNSAMPLED = RequestRecord("", "", 0.0, 0)
UNSAMPLED.closed = True
