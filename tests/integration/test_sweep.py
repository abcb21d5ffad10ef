"""asyncprof sweep, test-sized: two modes, four users levels, two trials each."""

import json
from pathlib import Path

import pytest

from tests.integration.helpers import asyncprof

pytestmark = pytest.mark.integration


def test_sweep_two_modes_four_levels(traces: Path, service_url: str) -> None:
    proc = asyncprof("sweep", "--modes", "sync,async", "--users", "1,2,4,8", "--trials", "2", "--duration", "2",
                     "--warmup", "0.5", "--workers", "1", "--db", service_url, "--out", str(traces), "--json",
                     timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    points = result["points"]
    assert sorted((p["mode"], p["users"]) for p in points) == [(m, u) for m in ("async", "sync") for u in (1, 2, 4, 8)]
    for p in points:
        assert p["trials"] == 2 and len(p["run_ids"]) == 2
        for key in ("throughput_rps", "p99_ms"):
            v = p[key]
            assert 0 < v["ci_low"] <= v["median"] <= v["ci_high"], (p["mode"], p["users"], key, v)
    assert set(result["max_users_within_slo"]) == set(result["knee"]) == {"sync", "async"}
    saved = list(traces.glob("sweep-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["recorded"] == 16
    assert len([d for d in traces.iterdir() if d.is_dir()]) == 16  # every point's run directory is kept
