"""Run the real ``asyncprof`` command and inspect what it left behind."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SHORT = ["--duration", "4", "--warmup", "1.5", "--users", "10", "--workers", "2",
         "--profile-every", "5", "--pyspy-rate", "50"]  # fmt: skip


def asyncprof(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "asyncprof", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def only_run(parent: Path) -> Path:
    runs = [p for p in parent.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text())


def report_json(run: Path) -> dict[str, Any]:
    proc = asyncprof("report", str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def started_pids(m: dict[str, Any]) -> list[int]:
    pids = m.get("pids", {})
    out = [pids[k] for k in ("server", "locust", "upstream") if k in pids]
    return out + list(pids.get("workers", [])) + list(pids.get("locust_workers", []))


#: The breakdown's categories (the report's ``attribution_ms`` keys that sum to the client latency).
CATEGORIES = ("cpu", "db_wait", "db_connect", "upstream_wait", "event_loop", "thread_hop", "gil_wait",
              "os_run_queue", "blocking", "server_queue", "other")


def close_to(actual: float, expected: float) -> bool:
    """Within 10% or 0.5 ms of *expected*, whichever is larger (the calibration tolerance)."""
    return abs(actual - expected) <= max(0.1 * expected, 0.5)


def assert_adds_up(report: dict[str, Any]) -> None:
    """The categories sum to the mean client latency within 5%, and ``other`` is under 5% of it."""
    a = report["attribution_ms"]
    latency = report["latency_ms"]["mean"]
    assert abs(sum(a[c] for c in CATEGORIES) - latency) <= 0.05 * latency, (a, latency)
    assert abs(a["other"]) <= 0.05 * latency, f"other is {a['other']:.2f} ms of {latency:.2f} ms"
