"""CPU time of processes and of the machine from /proc, and the manifest's cpu_window maths."""

import subprocess
import sys
import time

from asyncprof.collectors.procstat import CpuSnapshot, cpu_window, machine_ticks, process_cpu_s


def test_a_busy_child_uses_cpu() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<0.6: pass"])
    try:
        before = process_cpu_s(child.pid)
        child.wait(10)
    finally:
        child.kill()
    assert before is not None
    assert process_cpu_s(child.pid) is None  # reaped: gone


def test_own_cpu_grows_and_machine_ticks_are_monotone() -> None:
    import os

    a, ma = process_cpu_s(os.getpid()), machine_ticks()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    b, mb = process_cpu_s(os.getpid()), machine_ticks()
    assert a is not None and b is not None and b - a >= 0.1
    assert ma is not None and mb is not None and mb[1] >= ma[1] and mb[0] >= ma[0]


def test_cpu_window_maths() -> None:
    start = CpuSnapshot(100.0, {"worker:11": 1.0, "worker:12": 2.0, "server": 0.5, "locust": 3.0}, (100, 400))
    end = CpuSnapshot(110.0, {"worker:11": 4.5, "worker:12": None, "server": 0.5, "locust": 8.0}, (250, 600))
    w = cpu_window(start, end)
    assert w["seconds"] == 10.0
    assert w["workers_cpu_s"] == {"11": 3.5, "12": None}
    assert w["server_master_cpu_s"] == 0.0 and w["locust_cpu_s"] == 5.0 and w["pyspy_cpu_s"] is None
    assert w["machine_busy_share"] == 0.75
