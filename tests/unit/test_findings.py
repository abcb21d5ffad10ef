"""Findings fire at their thresholds and not below; validity; ranking."""

from typing import Any

import pytest

from asyncprof.analysis import findings as F
from asyncprof.analysis.findings import FindingInputs, diagnose

LATENCY = 100.0  # ms: shares below are simply ms / 100


def breakdown(**ms: float) -> dict[str, float]:
    """A mean breakdown summing to LATENCY: what the named categories leave goes to db_wait."""
    out = dict.fromkeys(("cpu", "db_wait", "db_connect", "event_loop", "thread_hop", "gil_wait", "os_run_queue",
                         "blocking", "server_queue", "other"), 0.0)
    out.update(ms)
    out["db_wait"] = LATENCY - sum(v for k, v in out.items() if k != "db_wait")
    return out


def titles(**kw: Any) -> list[str]:
    return [f.title for f in diagnose(FindingInputs(**kw)).findings]


def test_nothing_known_means_no_findings_and_a_valid_run() -> None:
    d = diagnose(FindingInputs())
    assert d.findings == [] and d.valid and d.invalid_reasons == []


@pytest.mark.parametrize(("category", "threshold", "title", "extra"), [
    ("event_loop", F.LATENCY_SHARE, "Event loop saturated", {"interface": "asgi"}),
    ("gil_wait", F.LATENCY_SHARE, "GIL contention", {}),
    ("os_run_queue", F.LATENCY_SHARE, "Workers wait for a CPU", {"workers": 2, "cpus_usable": 4}),
    ("blocking", F.LATENCY_SHARE, "Blocking calls on the event loop", {"interface": "asgi"}),
    ("server_queue", F.SERVER_QUEUE_SHARE, "Requests queue before a worker takes them", {}),
    ("other", F.LATENCY_SHARE, "Time the accounting does not explain", {}),
    ("db_connect", F.DB_CONNECT_SHARE, "A new database connection per request", {}),
    ("thread_hop", F.LATENCY_SHARE, "Thread hops from sync code under ASGI", {"interface": "asgi"}),
])
def test_latency_findings_fire_at_the_threshold_and_not_below(category: str, threshold: float, title: str,
                                                              extra: dict[str, Any]) -> None:
    at = diagnose(FindingInputs(attribution_ms=breakdown(**{category: threshold * LATENCY}), **extra))
    (finding,) = [f for f in at.findings if f.title == title]
    assert finding.share == pytest.approx(threshold) and finding.share_of == "latency"
    assert "% of latency" in finding.detail
    below = titles(attribution_ms=breakdown(**{category: threshold * LATENCY - 0.1}), **extra)
    assert title not in below


def test_more_workers_than_cores_is_named_as_such() -> None:
    kw = {"attribution_ms": breakdown(os_run_queue=20.0), "cpus_usable": 2}
    assert titles(workers=4, **kw) == ["More workers than cores"]
    assert titles(workers=2, **kw) == ["Workers wait for a CPU"]


def test_asgi_only_findings_stay_quiet_under_wsgi() -> None:
    att = breakdown(blocking=30.0, thread_hop=30.0)
    assert titles(attribution_ms=att, interface="wsgi") == []
    assert set(titles(attribution_ms=att, interface="asgi")) == {"Blocking calls on the event loop",
                                                                 "Thread hops from sync code under ASGI"}


def test_unexplained_time_counts_negative_residuals_too() -> None:
    (f,) = diagnose(FindingInputs(attribution_ms=breakdown(other=-12.0))).findings
    assert f.title == "Time the accounting does not explain" and f.share == pytest.approx(0.12)


def test_event_loop_title_follows_the_loop_threads_cpu() -> None:
    att = breakdown(event_loop=30.0)
    assert titles(attribution_ms=att, loop_busy=F.LOOP_BUSY) == ["Event loop saturated"]
    assert titles(attribution_ms=att, loop_busy=0.3) == ["Requests wait for long event-loop steps"]


def test_thread_hops_name_their_sites_and_use_the_larger_share() -> None:
    inp = FindingInputs(
        interface="asgi", attribution_ms=breakdown(thread_hop=5.0), hops_per_request=4.0,
        hop_sites={"Signal.send": 400, "SessionMiddleware.process_request": 100,
                   "CsrfViewMiddleware.process_view": 100},
        worker_requests=100, cpu_shares={"thread_pool": 0.33},
        cpu_top={"thread_pool": [{"function": "Thread.start (threading.py)"}]},
    )
    (f,) = diagnose(inp).findings
    assert f.share_of == "cpu" and f.share == pytest.approx(0.33)
    sites = f.evidence["hop_sites"]
    assert [s["site"] for s in sites] == ["Signal.send", "CsrfViewMiddleware.process_view",
                                          "SessionMiddleware.process_request"]
    assert sites[0]["per_request"] == 4.0
    assert "Signal.send (4.0/request)" in f.detail and "33% of the workers' CPU" in f.detail
    assert f.evidence["top_functions"] == ["Thread.start (threading.py)"]
    assert "async" in f.try_


def test_thread_hops_from_the_cpu_profile_alone() -> None:
    """Without accounting (instrument off) py-spy's thread_pool share still names the hops."""
    at = titles(interface="asgi", cpu_shares={"thread_pool": F.CPU_SHARE})
    below = titles(interface="asgi", cpu_shares={"thread_pool": F.CPU_SHARE - 0.001})
    assert at == ["Thread hops from sync code under ASGI"] and below == []


def test_pool_wait_is_its_own_finding_and_not_a_new_connection() -> None:
    att = breakdown(db_connect=12.0)
    assert titles(attribution_ms=att, pool_wait_ms=12.0) == ["Waiting for a free pooled connection"]
    assert titles(attribution_ms=att, pool_wait_ms=0.0) == ["A new database connection per request"]
    f = diagnose(FindingInputs(attribution_ms=att, connections="a new connection in every request")).findings[0]
    assert f.evidence["connections"] == "a new connection in every request"


def test_http_server_cpu_share() -> None:
    top = {"http_server": [{"function": "H11Protocol.data_received (uvicorn/protocols/http/h11_impl.py)"}]}
    at = diagnose(FindingInputs(interface="asgi", cpu_shares={"http_server": F.HTTP_SERVER_CPU_SHARE}, cpu_top=top,
                                http_parser="h11", loop="asyncio"))
    (f,) = at.findings
    assert f.title == "Pure-Python HTTP parsing" and f.share_of == "cpu" and "httptools" in f.try_
    assert "of the workers' CPU" in f.detail
    assert titles(interface="asgi", cpu_shares={"http_server": F.HTTP_SERVER_CPU_SHARE - 0.001}) == []
    assert titles(interface="asgi", cpu_shares={"http_server": 0.3}, http_parser="httptools",
                  loop="uvloop") == ["HTTP server CPU"]


@pytest.mark.parametrize(("kw", "valid"), [
    ({"locust_cores": F.LOADGEN_CORES}, False),
    ({"locust_cores": F.LOADGEN_CORES - 0.01}, True),
    ({"manifest_warnings": ["Locust: CPU usage above 90%"]}, False),
    ({"manifest_warnings": ["Locust exited with code 1"]}, True),
    ({"error_rate": 0.0101}, False),
    ({"error_rate": F.ERROR_RATE}, True),
])
def test_validity(kw: dict[str, Any], valid: bool) -> None:
    d = diagnose(FindingInputs(**kw))
    assert d.valid is valid
    assert len(d.invalid_reasons) == (0 if valid else 1)
    assert d.load_generator_saturated is (not valid and "error_rate" not in kw)


def test_ranking_validity_first_then_by_share() -> None:
    d = diagnose(FindingInputs(interface="asgi", error_rate=0.05,
                               attribution_ms=breakdown(event_loop=15.0, gil_wait=40.0, server_queue=30.0)))
    assert [f.title for f in d.findings] == ["Errors above 1%", "GIL contention",
                                             "Requests queue before a worker takes them", "Event loop saturated"]
    assert d.findings[0].share is None and d.findings[0].share_of == "validity"
    js = d.findings[1].to_json()
    assert set(js) == {"title", "detail", "share", "share_of", "evidence", "try"} and js["share"] == 0.4
