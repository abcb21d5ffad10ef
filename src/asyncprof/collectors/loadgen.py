"""Run Locust headless in its own process and follow its per-request log."""

import sys
from collections.abc import Sequence
from pathlib import Path

from asyncprof.processes import ManagedProcess, ProcessGroup
from asyncprof.run import Run
from asyncprof.scenarios import Endpoint

LOCUSTFILE = Path(__file__).resolve().parent.parent / "loadgen" / "locustfile.py"
# Extra seconds Locust runs past the measured window, so requests that start
# inside the window also finish inside Locust's run time.
TAIL_SECONDS = 2.0


def start_locust(group: ProcessGroup, run: Run, *, url: str, endpoints: Sequence[Endpoint], users: int,
                 spawn_rate: float, run_time: float, env: dict[str, str]) -> ManagedProcess:
    """Start ``locust --headless`` for *run_time* seconds against *url*."""
    env = dict(env)
    env["ASYNCPROF_PATHS"] = ",".join(f"{name}={path}:{weight}" for name, path, weight in endpoints)
    env["ASYNCPROF_REQUEST_LOG"] = str(run.requests_path.resolve())
    argv = [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless",
        "--host", url,
        "--users", str(users),
        "--spawn-rate", f"{spawn_rate:g}",
        "--run-time", f"{max(1, round(run_time))}s",
        "--stop-timeout", "5",
        "--csv", str((run.path / "locust" / "stats").resolve()),
        "--only-summary",
        "--loglevel", "WARNING",
        "--exit-code-on-error", "0",
    ]  # fmt: skip
    # SIGINT makes Locust stop its users, write its CSV and fire `quitting` (our log flush).
    import signal

    return group.start("locust", argv, env=env, log_path=run.logs_dir / "locust.log", stop_signal=signal.SIGINT)


class RequestLogTail:
    """Reads complete new lines of the request log as Locust appends them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[tuple[float, int, float]]:
        """Return ``(start, status, latency_ms)`` for each request logged since the last call."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        out = []
        for line in lines:
            fields = line.split(b"\t")
            if len(fields) < 4 or fields[0] == b"start":
                continue
            try:
                out.append((float(fields[0]), int(fields[2]), float(fields[3])))
            except ValueError:
                continue
        return out
