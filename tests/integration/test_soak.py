"""Resource hygiene: runs back to back in one process leave nothing behind.

``asyncprof record`` runs several times in this test's own process (as ``sweep`` does), on a
private PostgreSQL in a data directory of the test's own.  After every run: no process asyncprof
started is alive (found by what each one carries, its run directory or the data directory, not by
name), every port the run used is free, and this process holds no more file descriptors or
threads than before the first run; no temporary directory of asyncprof's is left.  And the data
directory does not keep growing from run to run.
"""

import os
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from asyncprof.cli import main
from tests.integration.helpers import manifest

pytestmark = pytest.mark.integration

RUNS = 4


def _fds() -> set[str]:
    return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}


def _carrying(marker: str) -> list[str]:
    """Live processes (but this one) whose command line or environment mentions *marker*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            text = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker.encode() in text:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")[:120]
            found.append(f"{entry.name}: {command!r}")
    return found


def _free(port: int) -> bool:
    """Whether a server could listen on *port* now (connections in TIME_WAIT do not count, as for
    any server, which sets SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _asyncprof_temp() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("asyncprof-")}


def test_back_to_back_runs_leave_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pgdata = tmp_path / "pgdata"
    monkeypatch.setenv("ASYNCPROF_PGDATA", str(pgdata))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    out = tmp_path / "traces"
    temp_before = _asyncprof_temp()
    fds_before: set[str] | None = None
    threads_before = 0
    sizes = []
    for i in range(RUNS):
        mode = ("sync", "async")[i % 2]
        code = main(["record", "--mode", mode, "--db", "embedded", "--duration", "2", "--warmup", "0.5",
                     "--users", "4", "--workers", "1", "--rows", "500", "--pyspy-rate", "20", "--out", str(out)])
        assert code == 0, f"run {i} ({mode}) exited {code}"
        runs = sorted(p for p in out.iterdir() if p.is_dir())
        assert len(runs) == i + 1
        m = manifest(runs[-1])
        assert m["status"] == "complete", m.get("reason")
        assert not _carrying(str(runs[-1])), "a process of the run is still alive"
        assert not _carrying(str(pgdata)), "the private PostgreSQL is still alive"
        port = m.get("server", {}).get("port") or m.get("config", {}).get("port")
        assert port and _free(int(port)), f"port {port} is still taken"
        sizes.append(_size(pgdata))
        if i == 0:  # the first run loads modules and caches for good: compare from there
            fds_before, threads_before = _fds(), threading.active_count()
        else:
            assert fds_before is not None
            assert _fds() - fds_before == set(), f"run {i} left file descriptors open"
            assert threading.active_count() <= threads_before, [t.name for t in threading.enumerate()]
    assert _asyncprof_temp() <= temp_before, _asyncprof_temp() - temp_before
    # The data directory settles: later runs reuse the table and recycle WAL instead of adding to it.
    growth = sizes[-1] - sizes[1]
    assert growth <= 0.25 * sizes[1], f"data directory sizes after each run: {sizes}"
