"""The load generator's plumbing: CPU pinning of children, saturation warnings, the open-loop log."""

import os
import sys
from pathlib import Path

import pytest

from asyncprof.analysis.requests import read_request_log
from asyncprof.collectors.loadgen import saturation_warnings
from asyncprof.loadgen.request_log import REQUEST_LOG_HEADER
from asyncprof.processes import ProcessGroup


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable CPUs")
def test_children_start_on_the_cpus_asked_for(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    log = tmp_path / "child.log"
    code = "import os, subprocess, sys; print(sorted(os.sched_getaffinity(0)));" \
           "subprocess.run([sys.executable, '-c', 'import os; print(sorted(os.sched_getaffinity(0)))'])"
    with ProcessGroup() as group:
        child = group.start("child", [sys.executable, "-c", code], log_path=log, cpus=[cpu])
        assert child.wait(30) == 0
    # The child and what it forks run on that CPU only.
    assert log.read_text().split() == [f"[{cpu}]", f"[{cpu}]"]


def test_saturation_warnings_come_from_every_locust_log(tmp_path: Path) -> None:
    (tmp_path / "locust.log").write_text(
        "[2026-11-28 12:00:00,000] host/WARNING/root: CPU usage above 90%! This may constrain your throughput "
        "and may even give inconsistent response time measurements!\nother line\n")
    (tmp_path / "locust-worker-2.log").write_text(
        "WARNING/asyncprof: asyncprof: load generator fell behind its schedule: p99 lag 31.0 ms, max 80.0 ms\n"
        "WARNING/asyncprof: asyncprof: load generator fell behind its schedule: p99 lag 31.0 ms, max 80.0 ms\n")
    (tmp_path / "server.log").write_text("CPU usage above 90%\n")  # not the load generator's
    warnings = saturation_warnings(tmp_path)
    assert len(warnings) == 2
    assert warnings[0].startswith("load generator (locust-worker-2): asyncprof: load generator fell behind")
    assert warnings[1].startswith("load generator (locust): CPU usage above 90%!")
    # The findings' validity rule keys on these words.
    assert all("cpu" in w.lower() or "fell behind" in w for w in warnings)


def test_request_log_reads_open_loop_lag_and_older_logs(tmp_path: Path) -> None:
    path = tmp_path / "requests.tsv"
    path.write_text(REQUEST_LOG_HEADER
                    + "100.0\tsync/seed\t200\t12.5\t10\tabc\t\t2.500\n"  # open loop
                    + "100.1\tsync/seed\t200\t3.0\t10\tabd\t\t\n"  # closed loop: empty lag
                    + "100.2\tsync/seed\t200\t4.0\t10\tabe\t\n"  # a log from before the lag column
                    + "100.3\tsync/seed\t200\t4.0\t10\tabf\t\tnot-a-number\n")
    log = read_request_log(path)
    assert log.lag_ms == [2.5, None, None]
    assert log.skipped == 1
    assert log.window(100.05, 101).lag_ms == [None, None]
