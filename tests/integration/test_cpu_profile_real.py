"""The CPU profile of a real short async recording: the thread hop, the loop and Django all show."""

import json
from pathlib import Path

import pytest

from asyncprof.analysis.categories import CATEGORIES
from asyncprof.analysis.cpu_profile import cpu_profile
from tests.integration.helpers import asyncprof, manifest, only_run

pytestmark = pytest.mark.integration

RATE, DURATION = 50, 4


def test_async_run_cpu_profile(tmp_path: Path) -> None:
    proc = asyncprof("record", "--mode", "async", "--duration", str(DURATION), "--warmup", "1.5", "--users", "10",
                     "--workers", "2", "--pyspy-rate", str(RATE), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = only_run(tmp_path)
    m = manifest(run)
    profile = cpu_profile(run / "pyspy" / "samples.txt")

    # Idle samples are excluded: on-CPU samples are a strict part of the file, and every one is classified.
    assert 0 < profile.on_cpu_samples < profile.samples, profile
    assert profile.idle_samples == profile.samples - profile.on_cpu_samples
    assert sum(profile.category_samples.values()) == profile.on_cpu_samples
    # One GIL holder per process per tick at most: waiting threads (the pool's idle threads, the
    # loop in epoll) are not counted, however many there are.
    workers = {w["pid"] for w in m["workers"]}
    assert set(profile.on_cpu_by_pid) <= workers | {m["pids"]["server"]}
    assert all(n <= RATE * DURATION for n in profile.on_cpu_by_pid.values()), profile.on_cpu_by_pid

    shares = profile.shares
    assert list(shares) == list(CATEGORIES)
    for category in ("thread_pool", "event_loop", "django"):
        assert shares[category] > 0, (category, shares)
    assert any(f.function.startswith(("SyncToAsync.", "ThreadPoolExecutor.submit"))
               for f in profile.top_functions["thread_pool"]), profile.top_functions["thread_pool"]
    json.dumps(profile.to_json())
