"""py-spy attached to the server's master process and all its workers.

Recording choices:

* ``--nonblocking``: py-spy does not pause the workers for each sample.  In
  blocking mode each sample stops every thread of the process; at 100 Hz over
  four workers that cost this 2-core machine a quarter of its throughput.
* ``--gil``: only the thread holding the GIL is sampled, so a sample is a
  worker running Python (or C that keeps the GIL).  A thread blocked in
  ``epoll``, on a queue or lock, or in psycopg2 waiting for PostgreSQL has
  released the GIL and is not sampled.  Without ``--gil`` every thread is
  sampled and the stacks cannot tell a thread blocked in C from one running:
  the leaf is the Python line that called C either way (OTel's
  ``CursorTracer.traced_execution``, or the view's ``cursor.execute`` line with
  tracing off), and a thread waiting to re-take the GIL after a socket send
  looks like the send.  Measured 2026-11-28 (4 workers, 50 users, 20 Hz, two
  py-spy instances side by side over the same 6 s), in CPU per worker:

  ==================  ======  ============================  =====
  run                 kernel  every thread - idle leaves    --gil
  ==================  ======  ============================  =====
  sync, bare          0.24    0.72                          0.26
  sync, default       0.30    0.85                          0.45
  async, bare         0.35    0.82                          0.54
  async, default      0.36    0.92                          0.62
  ==================  ======  ============================  =====

  (kernel = utime+stime / wall time; the middle column already uses the
  refined idle table, the original one gave 0.89-1.00).  Every-thread samples
  on the bare sync view's two ``cursor.execute`` lines: 129 + 43, with
  ``--gil`` 0 + 1; on OTel's ``traced_execution`` call line (sync, default):
  182, with ``--gil`` 8.  What ``--gil`` still counts beyond the kernel is the
  GIL held while the OS has preempted the holder on this saturated machine.
  In async runs a third of the GIL samples sit on ``ThreadPoolExecutor.submit``'s
  ``work_queue.put`` line (87 of 258), which wakes a pool thread (probably
  preempting the waker, GIL in hand); without that line async bare matches
  the kernel (0.36).  That stall is a cost of the thread hop, and the CPU
  profile bills it to ``thread_pool``.  ``--gil`` is also cheaper: py-spy
  itself used 0.32 s of CPU instead of 1.40 s (async bare), as it no longer
  walks twenty-odd waiting threads per worker.  Lost: stacks of waiting
  threads (e.g. the event loop blocked in ``Thread.start``), and so most of
  the "idle" samples; ``gil=False`` records every thread as before.
* ``--idle``: keep GIL holders that py-spy's own heuristic calls idle (it
  misreads asyncio); asyncprof marks idle stacks itself from their leaf frames
  (``analysis/stacks.py``), which with ``--gil`` only removes threads caught
  entering or leaving a wait (0.5-5 % of samples).
* ``--threads``: thread ids in every stack, so the loop thread and the
  thread-hop threads can be told apart.
* ``--format raw``: collapsed stacks; speedscope is rendered from them.
* One py-spy per process (``record``, :class:`PySpies`), not one with ``--subprocesses``:
  py-spy's subprocess mode looks for new children every 100 ms by reading the parent of every
  process on the machine from ``/proc``, which costs more than the sampling itself.  Measured
  2026-12-07 on this 2-core VM, a master and four idle workers at 5 Hz: 8 ms of py-spy CPU a
  second with ``--subprocesses`` (20 Hz: the same), 0.3 ms a second for one py-spy on one process.
  asyncprof reads the master's children from ``/proc/<master>/task/*/children`` at every tick (a
  replacement worker is sampled from its fork), starts a py-spy for each, and writes the samples as
  ``--subprocesses`` would have: each stack under its process chain (``process <pid>:"<command
  line>"`` frames from the master down).  ``attach`` still uses ``--subprocesses`` (someone else's
  server: its workers announce nothing).
"""

import contextlib
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from asyncprof.collectors.proctree import children, cmdline, parent_pid, process_alive
from asyncprof.processes import ManagedProcess, ProcessGroup
from asyncprof.run import Run

SAMPLES_FILE = "samples.txt"
#: Sampling flags of ``attach`` (before ``--nonblocking``), for manifests.
SAMPLING_FLAGS: tuple[str, ...] = ("--subprocesses", "--gil", "--idle", "--threads")
#: Sampling flags of ``record``'s py-spy per process (before ``--nonblocking``), for manifests.
PROCESS_FLAGS: tuple[str, ...] = ("--gil", "--idle", "--threads")
#: py-spies started on one process at most (see :meth:`PySpies.follow`).
ATTEMPTS = 3


def pyspy_binary() -> str | None:
    """py-spy next to this Python (a venv's bin) or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start_pyspy(group: ProcessGroup, run: Run, *, pid: int, rate: int, duration: float,
                nonblocking: bool = True, gil: bool = True, cpus: Sequence[int] | None = None) -> ManagedProcess | None:
    """Start sampling *pid* and its subprocesses for *duration* seconds; None if py-spy is missing.

    *gil* False samples every thread (wall-clock stacks of waiting threads, no on-CPU accuracy).
    """
    binary = pyspy_binary()
    if binary is None:
        return None
    argv = [
        binary, "record",
        "--pid", str(pid),
        "--subprocesses",
        "--rate", str(rate),
        "--duration", str(max(1, round(duration))),
        "--format", "raw",
        *(["--gil"] if gil else []),
        "--idle",
        "--threads",
        *(["--nonblocking"] if nonblocking else []),
        "--output", str(run.pyspy_dir / SAMPLES_FILE),
    ]  # fmt: skip
    # SIGINT makes py-spy stop sampling and still write what it has.
    return group.start("py-spy", argv, log_path=run.logs_dir / "pyspy.log", stop_signal=signal.SIGINT, cpus=cpus)


class PySpies:
    """py-spy on each process of a server: its master and every worker, one py-spy each.

    :meth:`follow` (every tick) starts a py-spy for each process not followed yet, sampling until *until_unix*;
    :meth:`finish` waits for them (or stops them, writing what they have), then writes
    ``pyspy/samples.txt`` from the per-process files with the process chain of each stack.  Every
    py-spy writes its messages to ``logs/pyspy.log``.  The processes belong to *group*, which stops
    them on any exit.
    """

    def __init__(self, group: ProcessGroup, run: Run, *, root: int, rate: int, until_unix: float,
                 nonblocking: bool = True, gil: bool = True, cpus: Sequence[int] | None = None) -> None:
        self.group, self.run, self.root = group, run, root
        self.rate, self.until_unix, self.nonblocking, self.gil, self.cpus = rate, until_unix, nonblocking, gil, cpus
        self.procs: dict[int, ManagedProcess] = {}  # sampled pid -> its (latest) py-spy
        self.attempts: dict[int, int] = {}  # sampled pid -> py-spies started on it
        self.chains: dict[int, str] = {}  # sampled pid -> the process frames its stacks go under
        self.log = run.logs_dir / "pyspy.log"
        self.binary = pyspy_binary()  # looked up once: follow() runs at every tick of the recorder

    def follow(self, pids: Iterable[int] = ()) -> list[int]:
        """Start sampling the root, its children and *pids*, each not followed yet; the started ones.

        A child is followed from the moment it exists (a replacement worker's start-up is sampled as
        ``--subprocesses`` would), found by reading the root's ``children`` files, not all of
        ``/proc``.  A py-spy that could not attach to a process still there (one that had not yet
        exec'd Python) is tried again, up to :data:`ATTEMPTS` times.  Nothing starts once the
        window is over.
        """
        binary = self.binary
        duration = self.until_unix - time.time()
        if binary is None or duration < 0.5:
            return []
        started = []
        for pid in dict.fromkeys([self.root, *children(self.root), *pids]):
            proc = self.procs.get(pid)
            if proc is not None and (proc.popen.poll() in (None, 0) or self.attempts[pid] >= ATTEMPTS
                                     or not process_alive(pid)):
                continue
            self.chains[pid] = process_chain(self.root, pid)
            argv = [binary, "record", "--pid", str(pid), "--rate", str(self.rate),
                    "--duration", str(max(1, round(duration))), "--format", "raw",
                    *(["--gil"] if self.gil else []), "--idle", "--threads",
                    *(["--nonblocking"] if self.nonblocking else []),
                    "--output", str(self._part(pid))]  # fmt: skip
            # SIGINT makes py-spy stop sampling and still write what it has.
            self.procs[pid] = self.group.start(f"py-spy:{pid}", argv, log_path=self.log,
                                               stop_signal=signal.SIGINT, cpus=self.cpus)
            self.attempts[pid] = self.attempts.get(pid, 0) + 1
            started.append(pid)
        return started

    def attached(self, wait: float = 0.5) -> bool:
        """Whether any py-spy is still sampling (or finished well) *wait* seconds after the start."""
        time.sleep(wait)
        return any(p.popen.poll() in (None, 0) for p in self.procs.values())

    def process_ids(self) -> dict[str, int]:
        """The py-spy processes, named ``pyspy:<sampled pid>``, for CPU snapshots."""
        return {f"pyspy:{pid}": proc.pid for pid, proc in self.procs.items()}

    def finish(self, *, until_unix: float, grace: float) -> bool:
        """Wait until *until_unix* + *grace* for the py-spies to end by themselves (they sample
        until the window's end), stop the ones still running, and write the samples.

        Returns whether py-spy failed: none of them ended well.  One failing alone is not a
        failure: its process exited (a worker killed or replaced) or is not Python (a server's
        helper process), as ``--subprocesses`` skips those.
        """
        deadline = max(until_unix, time.time()) + grace
        for proc in self.procs.values():
            if proc.wait(max(0.0, deadline - time.time())) is None:
                proc.stop(grace=10)
        self.write_samples()
        return bool(self.procs) and not any(p.popen.returncode == 0 for p in self.procs.values())

    def write_samples(self) -> Path | None:
        """``samples.txt`` from the per-process files, each stack under its process chain; None
        when no py-spy wrote anything.  The per-process files are removed once merged."""
        parts = [(pid, self._part(pid)) for pid in self.procs if self._part(pid).exists()]
        if not parts:
            return None
        out = self.run.pyspy_dir / SAMPLES_FILE
        tmp = out.with_suffix(".tmp")
        with open(tmp, "wb") as dst:
            for pid, path in parts:
                prefix = self.chains.get(pid, "").encode("utf-8", "replace")
                with open(path, "rb") as src:
                    for line in src:
                        if line.strip():
                            dst.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
        tmp.replace(out)
        for _, path in parts:
            with contextlib.suppress(OSError):
                path.unlink()
        return out

    def _part(self, pid: int) -> Path:
        return self.run.pyspy_dir / f"samples-{pid}.txt"


def process_chain(root: int, pid: int) -> str:
    """The process frames of *pid*'s stacks, as py-spy's ``--subprocesses`` writes them:
    ``process <pid>:"<command line>";`` for *root*, the processes between, and *pid*."""
    chain = [pid]
    while chain[-1] != root and len(chain) < 16:
        parent = parent_pid(chain[-1])
        if parent is None or parent <= 1:
            break
        chain.append(parent)
    if chain[-1] != root:  # not under root (or gone): the process alone
        chain = [pid]
    return "".join(f'process {p}:"{_command_line(p)}";' for p in reversed(chain))


def _command_line(pid: int) -> str:
    # py-spy joins the arguments with spaces; a quote, a ';' or a line break would break the frame
    return " ".join(" ".join(cmdline(pid)).split()).replace('"', "'").replace(";", ",")


PTRACE_HINT = "run as root, grant CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope=0"


def failure_reason(log_path: Path) -> str:
    """One line saying why py-spy failed, from its log."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "py-spy failed (no log)"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("py-spy> Sampling")]
    reason = next((ln for ln in lines if "rror" in ln or "ermission" in ln), lines[-1] if lines else "no output")
    if "ermission" in text or "ptrace" in text.lower():
        reason += f" ({PTRACE_HINT})"
    return reason
