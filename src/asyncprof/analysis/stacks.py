"""Parse py-spy's collapsed stacks and tell idle samples from active ones.

A line looks like ``process 123:"cmd";thread (456): MainThread;f (file.py:1);g (file.py:2) 7``:
optional process and thread frames, then Python frames root first, then the
sample count.  Idleness is decided from the leaf frame with the table below,
because py-spy's raw format does not mark idle samples and its own idle
heuristic misreads asyncio (a loop blocked in ``epoll`` is waiting, not working).

Since py-spy records with ``--gil`` (see ``asyncprof.collectors.pyspy``), a
sample is a thread *holding the GIL*: threads blocked in ``epoll``, in a
queue, or in psycopg2 waiting for PostgreSQL release the GIL and are not in the
file at all.  The table then only removes the few GIL holders caught entering
or leaving a wait (0.5-5 % of samples in the runs measured).  For recordings
made before (every thread, ``--idle`` without ``--gil``) it is the only filter,
and it cannot see a thread blocked in C code: the leaf is then the Python line
that called it (``CursorTracer.traced_execution``, a view's ``cursor.execute``
line, a socket ``send``), which such a recording counts as active.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_PROCESS = re.compile(r'^process (\d+):')
_THREAD = re.compile(r'^thread \((0x[0-9a-fA-F]+|\d+)\)')

# (function name, file suffix) of leaf frames where a thread waits rather than
# runs.  py-spy qualifies methods with their class (``EpollSelector.select``),
# so a name matches either exactly or as the last dotted part.
IDLE_LEAVES: tuple[tuple[str, str], ...] = (
    ("select", "selectors.py"),  # an asyncio loop or gunicorn worker with nothing to do
    ("poll", "selectors.py"),
    ("wait", "threading.py"),  # Condition/Event waits: executor threads, OTel's batch thread
    ("acquire", "threading.py"),
    ("get", "queue.py"),
    ("_worker", "concurrent/futures/thread.py"),
    ("_wait_for_tstate_lock", "threading.py"),  # Thread.join waiting for the thread to end
    ("wait_for_signals", "gunicorn/arbiter.py"),  # the gunicorn master
    ("sleep", "gunicorn/arbiter.py"),
    ("wait", "gunicorn/workers/sync.py"),
    ("close_graceful", "gunicorn/util.py"),  # gunicorn draining the client socket (recv with a deadline)
    ("accept", "socket.py"),
)


@dataclass(frozen=True)
class Stack:
    """One collapsed line: sampled process, thread id, Python frames root first, sample count."""

    pid: int
    thread: str
    frames: tuple[str, ...]
    count: int

    @property
    def idle(self) -> bool:
        return bool(self.frames) and is_idle_frame(self.frames[-1])


def is_idle_frame(frame: str) -> bool:
    """True if *frame* (``func (file:line)``) is a known waiting point."""
    func, _, rest = frame.partition(" (")
    filename = rest.rsplit(":", 1)[0]
    short = func.rpartition(".")[2]
    return any(short == f and filename.endswith(suffix) for f, suffix in IDLE_LEAVES)


def parse_line(line: str) -> Stack | None:
    """Parse one collapsed-stack line; None if it is not one."""
    stack, _, count_text = line.rstrip("\n").rpartition(" ")
    try:
        count = int(count_text)
    except ValueError:
        return None
    if not stack or count < 0:
        return None
    pid, thread = 0, ""
    frames = stack.split(";")
    # With --subprocesses, py-spy nests process frames (master;worker;...): the last one is the sampled process.
    while frames and (m := _PROCESS.match(frames[0])):
        pid = int(m.group(1))
        frames = frames[1:]
    if frames and (m := _THREAD.match(frames[0])):
        thread = m.group(1)
        frames = frames[1:]
    return Stack(pid=pid, thread=thread, frames=tuple(frames), count=count)


def iter_stacks(path: Path) -> Iterator[Stack]:
    """Yield every parseable stack of a collapsed file; a missing file yields nothing."""
    try:
        f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        for line in f:
            if (stack := parse_line(line)) is not None:
                yield stack


@dataclass
class SampleCounts:
    samples: int = 0
    idle: int = 0
    by_pid: dict[int, int] = field(default_factory=dict)


def count_samples(path: Path) -> SampleCounts:
    """Total, idle and per-process sample counts of a collapsed file."""
    counts = SampleCounts()
    for s in iter_stacks(path):
        counts.samples += s.count
        if s.idle:
            counts.idle += s.count
        counts.by_pid[s.pid] = counts.by_pid.get(s.pid, 0) + s.count
    return counts
