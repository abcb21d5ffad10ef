"""CPU time of processes and of the machine, from ``/proc``: the capacity check's ground truth.

Read at the start and the end of the measured window; the difference says how much CPU each
worker, the server master, py-spy and Locust used in the window, and how busy the machine was.
Kernel accounting, independent of every instrument asyncprof runs inside the workers.
"""

import os
import time
from dataclasses import dataclass, field
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of *pid* (all its threads), or None if it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime: fields 14 and 15 of stat(5)
    except (OSError, IndexError, ValueError):
        return None


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies over all CPUs since boot, from the ``cpu`` line of ``/proc/stat``."""
    try:
        with open("/proc/stat", "rb") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
    # counted in user and nice (proc(5)), so it is left out of the total.
    values = values[:8]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class CpuSnapshot:
    """CPU seconds of some processes at one instant."""

    unix: float
    processes: dict[str, float | None] = field(default_factory=dict)
    machine: tuple[int, int] | None = None

    @classmethod
    def take(cls, pids: dict[str, int | None]) -> "CpuSnapshot":
        """Read the CPU time of every named pid (None pids are skipped) and of the machine."""
        return cls(
            unix=time.time(),
            processes={name: process_cpu_s(pid) for name, pid in pids.items() if pid is not None},
            machine=machine_ticks(),
        )


def _sum(values: list[float | None]) -> float | None:
    """The sum of the known values, None when none is known."""
    known = [v for v in values if v is not None]
    return round(sum(known), 3) if known else None


def cpu_window(start: CpuSnapshot, end: CpuSnapshot) -> dict[str, Any]:
    """The manifest's ``cpu_window``: CPU seconds each process used between two snapshots.

    Keys: ``seconds`` (wall time between the snapshots), ``workers_cpu_s`` {pid: seconds} for
    names ``worker:<pid>``, ``server_master_cpu_s``, ``pyspy_cpu_s`` (``pyspy`` and every
    ``pyspy:<pid>``: one py-spy per sampled process), ``upstream_cpu_s``,
    ``locust_cpu_s`` (the busiest Locust process: ``locust`` or a ``locust:<i>`` worker, since
    each is single-threaded and saturates at one core), ``load_cpu_s`` {name: seconds} for every
    Locust process (None when a process was not running at both ends), ``machine_busy_share``
    (0..1 of all CPUs).
    """

    def used(name: str) -> float | None:
        a, b = start.processes.get(name), end.processes.get(name)
        return round(b - a, 3) if a is not None and b is not None else None

    load = {name: used(name) for name in start.processes if name == "locust" or name.startswith("locust:")}
    load_used = [v for v in load.values() if v is not None]
    busy_share = None
    if start.machine and end.machine and end.machine[1] > start.machine[1]:
        busy_share = round((end.machine[0] - start.machine[0]) / (end.machine[1] - start.machine[1]), 4)
    return {
        "seconds": round(end.unix - start.unix, 3),
        "workers_cpu_s": {
            name.split(":", 1)[1]: used(name) for name in start.processes if name.startswith("worker:")
        },
        "server_master_cpu_s": used("server"),
        "pyspy_cpu_s": _sum([used(name) for name in start.processes if name.split(":", 1)[0] == "pyspy"]),
        "locust_cpu_s": max(load_used, default=None),
        "load_cpu_s": load,
        "upstream_cpu_s": used("upstream"),
        "machine_busy_share": busy_share,
    }
