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
# The same, for Pattern.match(line, pos, endpos) (which anchors at pos; '^' would not match there).
_PROCESS_AT = re.compile(r'process (\d+):')
_THREAD_AT = re.compile(r'thread \((0x[0-9a-fA-F]+|\d+)\)')

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


@dataclass
class LineTally:
    """What a reader of a collapsed file met besides stacks: damaged lines, and why the file was unreadable."""

    skipped_lines: int = 0
    unreadable: str | None = None


def iter_stacks(path: Path, tally: LineTally | None = None) -> Iterator[Stack]:
    """Yield every parseable stack of a collapsed file; a missing file yields nothing.

    Skips and counts (in *tally*, when given) the non-empty lines it cannot parse; a file that
    cannot be opened or read (a directory, no permission, an I/O error) ends the stream and is
    noted in ``tally.unreadable``.  Never raises for damaged content.
    """
    try:
        f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except FileNotFoundError:
        return
    except OSError as exc:
        if tally is not None:
            tally.unreadable = exc.strerror or str(exc)
        return
    with f:
        try:
            for line in f:
                if (stack := parse_line(line)) is not None:
                    yield stack
                elif tally is not None and line.strip():
                    tally.skipped_lines += 1
        except OSError as exc:
            if tally is not None:
                tally.unreadable = exc.strerror or str(exc)


@dataclass
class StackTally:
    """A collapsed file summed by (process, Python frames): everything :func:`count_samples` and
    :func:`~asyncprof.analysis.cpu_profile.cpu_profile` need, from one pass over the file.

    ``counts[(pid, frames)]`` is the samples of the lines of process *pid* whose Python frames,
    joined by ``;`` as in the file, are *frames* (None for a line with no Python frame at all); a
    key is present, possibly with 0, for every parseable line.  The thread frame is left out: a
    recording has one short-lived thread per request (asgiref's executors), so keying by thread
    would keep one entry per line.  ``skipped_lines`` and ``unreadable`` as in :class:`LineTally`.
    """

    counts: dict[tuple[int, str | None], int] = field(default_factory=dict)
    skipped_lines: int = 0
    unreadable: str | None = None

    def stacks(self) -> Iterator[Stack]:
        """One :class:`Stack` per distinct (pid, frames) with its summed count (``thread`` is empty)."""
        frames_of: dict[str | None, tuple[str, ...]] = {}
        for (pid, joined), count in self.counts.items():
            frames = frames_of.get(joined)
            if frames is None:
                frames = frames_of[joined] = () if joined is None else tuple(joined.split(";"))
            yield Stack(pid=pid, thread="", frames=frames, count=count)


def tally_stacks(path: Path) -> StackTally:
    """Read a collapsed file once into a :class:`StackTally`; a missing file gives an empty tally.

    Lines are accepted and rejected exactly as :func:`parse_line` does (the same text decoding,
    count parsing and process/thread frames), but a line's frames are never split into a tuple:
    only the few thousand distinct stacks of a recording are, later, by :meth:`StackTally.stacks`.
    Never raises for damaged content; an unreadable file is noted in ``unreadable``.
    """
    tally = StackTally()
    counts = tally.counts
    try:
        # A large buffer: py-spy's lines are long (dozens of frames), and a million of them is
        # hundreds of MB that the default 8 KiB buffer would hand over in small pieces.
        f = open(path, encoding="utf-8", errors="replace", buffering=1 << 20)  # noqa: SIM115
    except FileNotFoundError:
        return tally
    except OSError as exc:
        tally.unreadable = exc.strerror or str(exc)
        return tally
    process, thread = _PROCESS_AT.match, _THREAD_AT.match
    with f:
        try:
            for line in f:
                # parse_line's steps, as positions in the line: a million lines of a few KB each
                # would otherwise be copied several times over (strip, partition, frame by frame).
                end = len(line) - 1 if line.endswith("\n") else len(line)  # rstrip("\n")
                space = line.rfind(" ", 0, end)  # rpartition(" "): stack before it, count after
                try:
                    count = int(line[space + 1:end]) if space > 0 else -1  # space <= 0: no stack
                except ValueError:
                    count = -1
                if count < 0:
                    if line.strip():
                        tally.skipped_lines += 1
                    continue
                # Drop the process frames, then the thread frame (the patterns cannot match across
                # a ';', so matching at *pos* is matching the frame that starts there).
                pid, pos, frames_left = 0, 0, True
                while (m := process(line, pos, space)) is not None:
                    pid = int(m.group(1))
                    pos = line.find(";", pos, space) + 1
                    if not pos:
                        frames_left = False
                        break
                if frames_left and thread(line, pos, space):
                    pos = line.find(";", pos, space) + 1
                    frames_left = pos > 0
                key = (pid, line[pos:space] if frames_left else None)
                counts[key] = counts.get(key, 0) + count
        except OSError as exc:
            tally.unreadable = exc.strerror or str(exc)
    return tally


@dataclass
class SampleCounts:
    """Sample totals of a collapsed file; ``skipped_lines``: lines that were not collapsed stacks;
    ``unreadable``: why the file could not be read (None if it could, or was missing)."""

    samples: int = 0
    idle: int = 0
    by_pid: dict[int, int] = field(default_factory=dict)
    skipped_lines: int = 0
    unreadable: str | None = None


def count_samples(source: Path | StackTally) -> SampleCounts:
    """Total, idle and per-process sample counts of a collapsed file (or of its tally, read once
    for this and the CPU profile); damaged lines are skipped and counted."""
    tally = source if isinstance(source, StackTally) else tally_stacks(source)
    counts = SampleCounts(skipped_lines=tally.skipped_lines, unreadable=tally.unreadable)
    for s in tally.stacks():
        counts.samples += s.count
        if s.idle:
            counts.idle += s.count
        counts.by_pid[s.pid] = counts.by_pid.get(s.pid, 0) + s.count
    return counts
