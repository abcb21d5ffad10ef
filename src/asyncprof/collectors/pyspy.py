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
"""

import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from asyncprof.processes import ManagedProcess, ProcessGroup
from asyncprof.run import Run

SAMPLES_FILE = "samples.txt"
#: Sampling flags of a default recording (before ``--nonblocking``), for manifests.
SAMPLING_FLAGS: tuple[str, ...] = ("--subprocesses", "--gil", "--idle", "--threads")


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
