"""py-spy attached to the server's master process and all its workers.

Recording choices:

* ``--nonblocking``: py-spy does not pause the workers for each sample.  In
  blocking mode each sample stops every thread of the process; at 100 Hz over
  four workers that cost this 2-core machine a quarter of its throughput.
* ``--idle``: keep samples of threads py-spy considers idle.  py-spy's raw
  output does not mark them, so asyncprof classifies idle stacks itself from
  their leaf frames (an event loop in ``select``/``epoll``, a thread waiting on
  a lock or queue), a rule that, unlike py-spy's own, is right for asyncio.
* ``--threads``: thread ids in every stack, so the loop thread and the
  thread-hop threads can be told apart.
* ``--format raw``: collapsed stacks; speedscope is rendered from them.
"""

import shutil
import signal
import sys
from pathlib import Path

from asyncprof.processes import ManagedProcess, ProcessGroup
from asyncprof.run import Run

SAMPLES_FILE = "samples.txt"


def pyspy_binary() -> str | None:
    """py-spy next to this Python (a venv's bin) or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start_pyspy(group: ProcessGroup, run: Run, *, pid: int, rate: int, duration: float,
                nonblocking: bool = True) -> ManagedProcess | None:
    """Start sampling *pid* and its subprocesses for *duration* seconds; None if py-spy is missing."""
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
        "--idle",
        "--threads",
        *(["--nonblocking"] if nonblocking else []),
        "--output", str(run.pyspy_dir / SAMPLES_FILE),
    ]  # fmt: skip
    # SIGINT makes py-spy stop sampling and still write what it has.
    return group.start("py-spy", argv, log_path=run.logs_dir / "pyspy.log", stop_signal=signal.SIGINT)


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
