"""CPU time of processes and of the machine from /proc, and the manifest's cpu_window maths."""

import os
import subprocess
import sys
import time

import pytest

from asyncprof.collectors.procstat import CpuSnapshot, cpu_window, machine_ticks, process_cpu_s

BURNER = "import time\nend = time.time() + 5\nwhile time.time() < end: pass"


def test_a_busy_child_uses_cpu() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURNER])
    try:
        time.sleep(0.1)  # past the interpreter's start-up
        before, t0 = process_cpu_s(child.pid), time.monotonic()
        time.sleep(0.5)
        after, t1 = process_cpu_s(child.pid), time.monotonic()
    finally:
        child.kill()
        child.wait()
    assert before is not None and after is not None
    # a spinning process gets its share of a CPU even on this busy 2-core machine (a tenth at the
    # very least); never more than one CPU (it has one thread), give or take a tick at each end
    assert 0.05 <= after - before <= (t1 - t0) + 0.03, (after - before, t1 - t0)
    assert process_cpu_s(child.pid) is None  # reaped: gone


def test_an_idle_child_uses_almost_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time\ntime.sleep(5)"])
    try:
        time.sleep(0.2)
        before = process_cpu_s(child.pid)
        time.sleep(0.3)
        after = process_cpu_s(child.pid)
    finally:
        child.kill()
        child.wait()
    assert before is not None and after is not None and 0 <= after - before <= 0.02


def test_all_threads_count() -> None:
    """/proc/<pid>/stat's utime + stime cover every thread of the process, not just the main one."""
    code = ("import threading, time\n"
            "def spin():\n    end = time.time() + 5\n    while time.time() < end: pass\n"
            "t = threading.Thread(target=spin); t.start(); time.sleep(5)")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.1)
        before = process_cpu_s(child.pid)
        time.sleep(0.4)
        after = process_cpu_s(child.pid)
    finally:
        child.kill()
        child.wait()
    assert before is not None and after is not None and after - before >= 0.04  # the main thread only sleeps


def test_no_such_process() -> None:
    assert process_cpu_s(2**22 + 12345) is None  # above the default pid_max: never a live pid


def test_own_cpu_grows_and_machine_ticks_are_monotone() -> None:
    a, ma = process_cpu_s(os.getpid()), machine_ticks()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    b, mb = process_cpu_s(os.getpid()), machine_ticks()
    assert a is not None and b is not None and 0.15 <= b - a <= 0.5
    assert ma is not None and mb is not None
    assert mb[1] >= ma[1] and mb[0] >= ma[0]
    assert 0 <= ma[0] <= ma[1] and 0 <= mb[0] <= mb[1]  # busy never exceeds total
    assert mb[0] - ma[0] >= 10  # this process alone was busy for ~20 ticks of 10 ms


def test_machine_total_ticks_are_cpus_times_elapsed() -> None:
    """Total jiffies grow by (online CPUs) × HZ per second: nothing (guest time) counted twice."""
    online = sum(1 for line in open("/proc/stat") if line[:3] == "cpu" and line[3].isdigit())
    hz = os.sysconf("SC_CLK_TCK")
    a, t0 = machine_ticks(), time.monotonic()
    time.sleep(1.0)
    b, t1 = machine_ticks(), time.monotonic()
    assert a is not None and b is not None
    expected = online * hz * (t1 - t0)
    assert 0.85 * expected <= b[1] - a[1] <= 1.15 * expected, (b[1] - a[1], expected)


def test_snapshot_skips_missing_pids() -> None:
    snap = CpuSnapshot.take({"worker:1": os.getpid(), "pyspy": None, "locust": 2**22 + 12345})
    assert set(snap.processes) == {"worker:1", "locust"}
    assert snap.processes["worker:1"] is not None and snap.processes["locust"] is None
    assert snap.machine is not None and abs(snap.unix - time.time()) < 5


def test_cpu_window_maths() -> None:
    start = CpuSnapshot(100.0, {"worker:11": 1.0, "worker:12": 2.0, "worker:13": 1.0, "server": 0.5,
                                "locust": 3.0, "pyspy": None}, (100, 400))
    end = CpuSnapshot(110.0004, {"worker:11": 4.5, "worker:12": None, "server": 0.5, "locust": 8.12345,
                                 "pyspy": 1.0, "worker:99": 7.0}, (250, 600))
    w = cpu_window(start, end)
    assert w == {
        "seconds": 10.0,
        # worker 12 died (None at the end), 13 is missing at the end, 99 appeared after the start:
        # only workers present at both ends have a figure, and only start's workers are listed
        "workers_cpu_s": {"11": 3.5, "12": None, "13": None},
        "server_master_cpu_s": 0.0,
        "pyspy_cpu_s": None,  # not running at the start
        "locust_cpu_s": 5.123,
        "load_cpu_s": {"locust": 5.123},
        "upstream_cpu_s": None,
        "machine_busy_share": 0.75,
    }


def test_cpu_window_load_generator_is_its_busiest_process() -> None:
    # Distributed Locust: the master schedules, the workers send; each saturates at one core.
    start = CpuSnapshot(0.0, {"locust": 1.0, "locust:1": 1.0, "locust:2": 2.0, "upstream": 0.5}, None)
    end = CpuSnapshot(10.0, {"locust": 1.2, "locust:1": 9.0, "locust:2": 6.0, "upstream": 1.5}, None)
    w = cpu_window(start, end)
    assert w["locust_cpu_s"] == 8.0
    assert w["load_cpu_s"] == {"locust": 0.2, "locust:1": 8.0, "locust:2": 4.0}
    assert w["upstream_cpu_s"] == 1.0


@pytest.mark.parametrize(
    ("start_machine", "end_machine"),
    [(None, (250, 600)), ((100, 400), None), ((100, 400), (100, 400)), (None, None)],
)
def test_cpu_window_without_machine_ticks(start_machine: tuple[int, int] | None,
                                          end_machine: tuple[int, int] | None) -> None:
    w = cpu_window(CpuSnapshot(1.0, {}, start_machine), CpuSnapshot(2.0, {}, end_machine))
    assert w["machine_busy_share"] is None
    assert w["workers_cpu_s"] == {} and w["server_master_cpu_s"] is None and w["locust_cpu_s"] is None


def test_cpu_window_of_real_snapshots() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURNER])
    try:
        time.sleep(0.1)
        pids = {f"worker:{child.pid}": child.pid, "server": os.getpid()}
        start = CpuSnapshot.take(pids)
        time.sleep(0.5)
        end = CpuSnapshot.take(pids)
    finally:
        child.kill()
        child.wait()
    w = cpu_window(start, end)
    assert 0.45 <= w["seconds"] <= 2.0
    assert w["workers_cpu_s"][str(child.pid)] >= 0.05
    assert 0 <= w["server_master_cpu_s"] <= 0.2  # this test process mostly slept
    assert 0.05 <= w["machine_busy_share"] <= 1.0  # at least the spinning child's CPU


def test_cpu_window_adds_up_one_pyspy_per_process() -> None:
    start = CpuSnapshot(0.0, {"pyspy:11": 0.5, "pyspy:12": 0.25, "pyspy:13": 0.1}, None)
    end = CpuSnapshot(10.0, {"pyspy:11": 0.75, "pyspy:12": 0.5, "pyspy:14": 0.2}, None)
    # 13's py-spy ended with its worker, 14's started after the start: neither has a figure
    assert cpu_window(start, end)["pyspy_cpu_s"] == 0.5
    assert cpu_window(CpuSnapshot(0.0, {"pyspy:11": None}, None),
                      CpuSnapshot(1.0, {"pyspy:11": 1.0}, None))["pyspy_cpu_s"] is None
