"""The fanout scenario end to end: asyncprof starts the upstream, the views call it 3 times, the breakdown says so.

At low load (4 users, 2 workers) and a 20 ms upstream delay: the sync view's 3 sequential calls
take at least 60 ms, the async view's 3 concurrent ones about 20 ms; ``upstream_wait`` is that
time (3 × 20 ms against 1 × 20 ms, within 15%), not ``other``; and when the run ends, the upstream
is gone with every other process the run started.
"""

import os
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import alive, asyncprof, manifest, only_run, report_json, started_pids

pytestmark = pytest.mark.integration

DELAY_MS = 20.0
CALLS = 3


def _processes_of_run(run_id: str, upstream_port: int) -> list[int]:
    """Live processes that belong to the run: its id in their environment, or the upstream's command line."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not alive(int(entry)):
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"ASYNCPROF_RUN_ID={run_id}".encode() in environ or (
                b"asyncprof.upstream" in cmdline and str(upstream_port).encode() in cmdline):
            found.append(int(entry))
    return found


def _record(out: Path, db: str, mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    out.mkdir()
    proc = asyncprof("record", "--mode", mode, "--scenario", "fanout", "--upstream-delay-ms", f"{DELAY_MS:g}",
                     "--users", "4", "--spawn-rate", "100", "--workers", "2", "--duration", "5", "--warmup", "2",
                     "--db", db, "--no-pyspy", "--no-pyinstrument", "--no-otel", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = only_run(out)
    return manifest(run), report_json(run)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_fanout_calls_the_upstream_and_attributes_the_wait(mode: str, tmp_path: Path, service_url: str) -> None:
    m, r = _record(tmp_path / mode, service_url, mode)
    # the upstream: started by asyncprof on loopback, recorded, and stopped with everything else
    upstream = m["upstream"]
    assert upstream["delay_ms"] == DELAY_MS and upstream["url"].startswith("http://127.0.0.1:")
    assert m["pids"]["upstream"] == upstream["pid"]
    assert m["status"] == "complete"
    assert not alive(upstream["pid"]), "the upstream service is still running"
    assert not any(alive(pid) for pid in started_pids(m)), "a process asyncprof started is still running"
    port = int(upstream["url"].rsplit(":", 1)[1])
    assert _processes_of_run(m["run_id"], port) == [], "a process of the run is still running"
    assert m["cpu_window"]["upstream_cpu_s"] is not None

    assert r["errors"] == 0 and r["requests"] > 20, (r["errors"], r["requests"])
    assert [e["name"] for e in r["endpoints"]] == [f"{mode}/fanout"]
    assert r["upstream_calls_per_request"] == pytest.approx(CALLS)
    assert r["queries_per_request"] == 0
    p50 = r["latency_ms"]["p50"]
    a, latency = r["attribution_ms"], r["latency_ms"]["mean"]
    detail = {"p50": p50, "latency": latency, **a}
    if mode == "sync":  # one call after another
        assert p50 >= CALLS * DELAY_MS - 1, detail
        assert abs(a["upstream_wait"] - CALLS * DELAY_MS) <= 0.15 * CALLS * DELAY_MS, detail
    else:  # all at once: the wait is one delay, not three, whatever CPU the request adds around it
        own = a["cpu"] + a["event_loop"] + a["os_run_queue"] + a["gil_wait"] + a["server_queue"] + a["thread_hop"]
        assert DELAY_MS <= p50 < CALLS * DELAY_MS + own, detail
        # the union of the three overlapping waits: one delay, never the sum of the three; less than one
        # by the request's own work inside the union (httpx sending the later calls, reading the answers),
        # which is its cpu/event_loop, and more by the upstream's queueing on a busy machine
        assert DELAY_MS * 0.75 <= a["upstream_wait"] <= DELAY_MS * 1.5, detail
    # the categories add up to the latency, and the wait is explained, not left in other
    assert abs(sum(a.values()) - latency) <= 0.05 * latency, detail
    assert abs(a["other"]) <= 0.05 * latency, detail
    assert r["accounting"]["match_rate"] >= 0.99, r["accounting"]
