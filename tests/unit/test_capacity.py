"""The capacity check's arithmetic and its choice of bottleneck."""

from dataclasses import replace
from typing import Any

import pytest

from asyncprof.analysis.capacity import SATURATED, CapacityInputs, assess_capacity

BASE = CapacityInputs(
    interface="asgi", workers=4, users=50, cpus_usable=8, requests=10_000, measured_rps=1000.0,
    workers_cpu_s={"11": 5.0, "12": 5.0, "13": 5.0, "14": 5.0}, cpu_seconds=10.0, machine_busy_share=0.5,
    attribution_ms=None, pool_wait_ms=None, wall_ms=None, loop_thread_cpu_s=None, worker_requests=0,
    latency_mean_ms=40.0, load_generator_saturated=False,
)


def cap(**kw: Any) -> dict[str, Any]:
    return assess_capacity(replace(BASE, **kw))


def test_cpu_per_request_predicted_max_and_utilisation() -> None:
    c = cap()
    assert c["cpu_ms_per_request"] == 2.0  # 20 CPU s / 10 000 requests
    assert c["limits_rps"] == {"cpu": 4000.0, "event_loop": None, "workers": None}  # 8 cores / 2 ms
    assert c["predicted_max_rps"] == 4000.0
    assert c["measured_rps"] == 1000.0 and c["utilisation"] == 0.25
    check = c["cpu_check"]
    assert check["measured_worker_cores"] == 2.0 and check["predicted_worker_cores"] == 2.0
    assert check["ratio"] == 1.0 and check["within_tolerance"] is True
    assert check["accounted_worker_cores"] is None


def test_the_loop_thread_bounds_the_prediction() -> None:
    # 4 loops, each 3 ms of loop-thread CPU per request: at most 4 × 1000 / 3 ≈ 1333 req/s.
    c = cap(loop_thread_cpu_s=30.0, worker_requests=10_000)
    assert c["loop_cpu_ms_per_request"] == 3.0
    assert c["limits_rps"]["event_loop"] == pytest.approx(1333.3, abs=0.1)
    assert c["predicted_max_rps"] == pytest.approx(1333.3, abs=0.1)
    assert c["utilisation"] == pytest.approx(0.75, abs=1e-3)
    assert c["bottleneck"] == "none/unknown"  # 75% is below the saturation mark
    c = cap(loop_thread_cpu_s=30.0, worker_requests=10_000, measured_rps=1200.0)
    assert c["bottleneck"] == "event_loop" and "loop thread" in c["reason"]


def test_no_loop_limit_under_wsgi_but_a_worker_limit() -> None:
    c = cap(interface="wsgi", loop_thread_cpu_s=30.0, worker_requests=10_000, wall_ms=4.0)
    assert c["limits_rps"]["event_loop"] is None
    assert c["limits_rps"]["workers"] == 1000.0  # 4 sync workers × 1000 / 4 ms
    assert c["bottleneck"] == "workers"


def test_cpu_saturation_at_the_mark() -> None:
    assert cap(measured_rps=4000.0 * SATURATED)["bottleneck"] == "cpu"
    assert cap(measured_rps=4000.0 * SATURATED - 1)["bottleneck"] == "none/unknown"
    busy = cap(machine_busy_share=0.95)
    assert busy["bottleneck"] == "cpu" and "95%" in busy["reason"]


def test_accounted_cpu_check() -> None:
    att = {"cpu": 1.8, "thread_hop": 0.0}
    check = cap(attribution_ms=att)["cpu_check"]
    assert check["accounted_worker_cores"] == 1.8 and check["accounted_ratio"] == 0.9
    assert check["accounted_within_tolerance"] is True
    assert cap(attribution_ms={"cpu": 1.0})["cpu_check"]["accounted_within_tolerance"] is False
    assert cap(attribution_ms=att)["accounted_cpu_ms_per_request"] == 1.8


def test_other_bottlenecks_in_order() -> None:
    assert cap(load_generator_saturated=True, measured_rps=3900.0)["bottleneck"] == "load_generator"
    assert cap(pool_wait_ms=4.0)["bottleneck"] == "db_pool"  # 10% of 40 ms
    assert cap(pool_wait_ms=3.9)["bottleneck"] == "none/unknown"
    hops = {"cpu": 5.0, "db_wait": 4.0, "thread_hop": 10.0, "event_loop": 3.0, "server_queue": 18.0, "other": 0.0}
    assert cap(attribution_ms=hops)["bottleneck"] == "thread_sensitive_thread"
    assert cap(attribution_ms={**hops, "db_wait": 11.0})["bottleneck"] == "none/unknown"  # hops not the largest
    assert cap(attribution_ms=hops, interface="wsgi")["bottleneck"] == "none/unknown"


def test_closed_loop_bound_in_the_reason() -> None:
    reason = cap()["reason"]
    assert "50 closed-loop users at 40.0 ms" in reason and "1250 req/s" in reason


def test_missing_cpu_window_degrades_with_a_note() -> None:
    c = cap(workers_cpu_s=None, cpu_seconds=None)
    assert c["cpu_ms_per_request"] is None and c["predicted_max_rps"] is None and c["utilisation"] is None
    assert c["limits_rps"]["cpu"] is None and c["cpu_check"]["ratio"] is None
    assert c["bottleneck"] == "none/unknown" and c["notes"]


def test_a_worker_without_cpu_time_is_noted() -> None:
    c = cap(workers_cpu_s={"11": 10.0, "12": None})
    assert c["cpu_ms_per_request"] == 1.0 and "understated" in c["notes"][0]
    assert cap(workers={}.get("x"), workers_cpu_s={"11": 1.0, "12": 1.0})["workers"] == 2


# --- requests in flight per worker, by mode -------------------------------------------------------

WSGI = {"interface": "wsgi", "wall_ms": 4.0, "measured_rps": 1000.0}  # 4 workers, 4 ms each request


@pytest.mark.parametrize(("mode", "extra", "per_worker", "limit"), [
    ("sync", {}, 1, 1000.0),                                   # 4 × 1 slot × 1000 / 4 ms
    ("gthread", {"threads": 8}, 8, 8000.0),
    ("gthread", {}, 4, 4000.0),                                # the mode's default --threads
    ("granian-wsgi", {"threads": 2}, 2, 2000.0),
    ("gevent", {}, 1000, 1_000_000.0),                         # gunicorn's default worker_connections
    ("gevent", {"worker_connections": 10}, 10, 10_000.0),
    (None, {}, 1, 1000.0),                                     # before modes: WSGI was the sync worker
])
def test_wsgi_request_slots_follow_the_mode(mode: str | None, extra: dict[str, Any], per_worker: int,
                                            limit: float) -> None:
    c = cap(mode=mode, **WSGI, **extra)
    assert c["concurrency_per_worker"] == per_worker and c["request_slots"] == 4 * per_worker
    assert c["limits_rps"]["workers"] == limit
    # 1000 req/s saturates four sync workers, not four workers that each serve several requests.
    assert (c["bottleneck"] == "workers") is (per_worker == 1)


def test_the_worker_limit_reason_names_threads() -> None:
    c = cap(mode="gthread", threads=2, **{**WSGI, "measured_rps": 1900.0})
    assert c["bottleneck"] == "workers"
    assert "4 workers × 2 (2 threads per gunicorn gthread worker) = 8 request slots" in c["reason"]
    assert "sync workers" not in c["reason"]
    assert "one request at a time" in cap(mode="sync", **WSGI)["reason"]


@pytest.mark.parametrize("mode", ["async", "uvicorn", "hypercorn", "daphne", None])
def test_asgi_loops_have_no_request_slot_limit(mode: str | None) -> None:
    c = cap(mode=mode, wall_ms=4.0)
    assert c["concurrency_per_worker"] is None and c["request_slots"] is None
    assert c["limits_rps"]["workers"] is None
    assert "accepts every connection" in c["concurrency"] and not c["notes"]


def test_granian_asgi_backpressure_is_backlog_over_workers() -> None:
    c = cap(mode="granian-asgi", wall_ms=4.0)
    assert c["concurrency_per_worker"] == 256 and c["request_slots"] == 1024  # 1024 // 4 workers
    assert c["limits_rps"]["workers"] == 256_000.0


def test_users_beyond_the_slots_wait_for_one() -> None:
    # Not saturated (no wall time: no slot limit computed), so the reason states the queue.
    reason = cap(mode="sync", interface="wsgi")["reason"]
    assert "50 users for 4 workers (gunicorn sync worker: one request at a time) = 4 request slots" in reason
    assert "about 46 wait for a free slot" in reason
    reason = cap(mode="gthread", interface="wsgi", threads=4)["reason"]
    assert "= 16 request slots: about 34 wait" in reason
    assert "wait for a free slot" not in cap(mode="gevent", interface="wsgi")["reason"]  # 4000 slots
    assert "wait for a free slot" not in cap(mode="uvicorn")["reason"]


def test_an_unknown_mode_has_no_slot_limit_and_says_so() -> None:
    c = cap(mode="mystery", interface="wsgi", wall_ms=4.0)
    assert c["limits_rps"]["workers"] is None and c["request_slots"] is None
    assert any("mystery" in n for n in c["notes"])
    threaded = cap(mode="mystery", interface="wsgi", wall_ms=4.0, threads=3)
    assert threaded["request_slots"] == 12


def test_new_breakdown_categories_take_part_in_the_hop_check() -> None:
    hops = {"cpu": 5.0, "db_wait": 4.0, "thread_hop": 10.0, "event_loop": 3.0, "server_queue": 18.0, "other": 0.0}
    assert cap(attribution_ms=hops)["bottleneck"] == "thread_sensitive_thread"
    # Waiting for another HTTP service (a category the attribution may add) larger than the hops.
    assert cap(attribution_ms={**hops, "upstream_wait": 12.0})["bottleneck"] == "none/unknown"
    assert cap(attribution_ms={"server_queue": 30.0, "other": 10.0})["bottleneck"] == "none/unknown"


def test_littles_law_overrules_a_wrong_slot_assumption() -> None:
    # A gthread run read without its mode (taken as sync workers): 880 req/s × 7.3 ms over 4 workers
    # is 1.6 requests in flight per worker, which one-at-a-time workers cannot hold.
    c = cap(mode=None, interface="wsgi", measured_rps=880.0, wall_ms=7.3)
    assert c["in_flight_per_worker"] == pytest.approx(1.606, abs=1e-3)
    assert c["limits_rps"]["workers"] is None and c["request_slots"] is None and c["bottleneck"] != "workers"
    assert any("1.61 requests at once" in n for n in c["notes"])
    # Within the tolerance (window edges) the assumption stands and the limit is saturated.
    c = cap(mode="sync", interface="wsgi", measured_rps=1100.0, wall_ms=4.0)
    assert c["in_flight_per_worker"] == 1.1 and c["limits_rps"]["workers"] == 1000.0 and c["bottleneck"] == "workers"
    # The same numbers with the mode recorded: 16 slots, nothing contradicted.
    c = cap(mode="gthread", interface="wsgi", threads=4, measured_rps=880.0, wall_ms=7.3)
    assert c["request_slots"] == 16 and not c["notes"] and c["limits_rps"]["workers"] == pytest.approx(2191.8, abs=0.1)
