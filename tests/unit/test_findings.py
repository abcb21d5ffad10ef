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


#: What an ASGI worker of the shop fixture reports (middleware_check.sync_only_middleware).
SHOP_MIDDLEWARE = [
    {"path": "django.middleware.security.SecurityMiddleware", "kind": "sync_hooks",
     "hooks": ["process_request", "process_response"], "hops": 0},
    {"path": "django.middleware.common.CommonMiddleware", "kind": "sync_hooks",
     "hooks": ["process_request", "process_response"], "hops": 0},
    {"path": "thirdparty.middleware.LegacyMiddleware", "kind": "sync_only", "hooks": [], "hops": 2,
     "thread_with": []},
    {"path": "catalog.middleware.RequestTimingMiddleware", "kind": "sync_only", "hooks": [], "hops": 2,
     "thread_with": ["django.middleware.security.SecurityMiddleware", "django.middleware.common.CommonMiddleware"]},
    {"path": "catalog.middleware.AuditMiddleware", "kind": "sync_hooks", "hooks": ["process_request"], "hops": 1},
    {"path": "django.middleware.clickjacking.XFrameOptionsMiddleware", "kind": "sync_hooks",
     "hooks": ["process_response"], "hops": 1},
]


def hop_inputs(**kw: Any) -> FindingInputs:
    base: dict[str, Any] = {
        "interface": "asgi", "attribution_ms": breakdown(thread_hop=12.0), "hops_per_request": 6.0,
        "hop_sites": {"SecurityMiddleware": 100, "catalog.middleware.shop_headers.<locals>.async_middleware": 100,
                      "XFrameOptionsMiddleware.process_response": 100},
        "worker_requests": 100,
    }
    base.update(kw)
    return FindingInputs(**base)


def test_thread_hops_name_the_users_sync_only_middleware_first() -> None:
    (f,) = diagnose(hop_inputs(sync_middleware=SHOP_MIDDLEWARE, app_packages=("catalog",))).findings
    timing = "catalog.middleware.RequestTimingMiddleware"
    assert f.detail.startswith(f"your middleware {timing} is sync-only: Django runs it in a thread on every "
                               "request (2 hops per request; SecurityMiddleware, CommonMiddleware run in that "
                               "thread too)")
    assert "your middleware catalog.middleware.AuditMiddleware runs its sync process_request in a thread" in f.detail
    # Third-party sync-only middleware is named after the user's own; Django's stock ones are not.
    assert f.detail.index("middleware thirdparty.middleware.LegacyMiddleware is sync-only") > f.detail.index(timing)
    assert "XFrameOptionsMiddleware" not in f.detail.split("hops per request, caused by")[0]
    assert "SecurityMiddleware (1.0/request)" in f.detail  # the hop sites are still quoted
    assert f.try_.startswith(f"make {timing} async-capable")
    assert "catalog.middleware.AuditMiddleware's process_request" in f.try_
    assert "thirdparty" not in f.try_  # not the user's code to change
    listed = f.evidence["sync_middleware"]
    assert [(m["path"], m["yours"]) for m in listed] == [
        (timing, True), ("catalog.middleware.AuditMiddleware", True), ("thirdparty.middleware.LegacyMiddleware", False)]
    assert f.share == pytest.approx(0.12)  # what the finding weighs is unchanged


def test_thread_hops_without_app_packages_still_name_sync_only_middleware() -> None:
    (f,) = diagnose(hop_inputs(sync_middleware=SHOP_MIDDLEWARE)).findings
    assert f.detail.startswith("middleware thirdparty.middleware.LegacyMiddleware is sync-only")
    assert "middleware catalog.middleware.RequestTimingMiddleware is sync-only" in f.detail
    assert "AuditMiddleware" not in f.detail  # sync hooks are only named in the user's own middleware
    assert "your middleware" not in f.detail and f.try_.startswith("make the middleware async-capable")


def test_thread_hops_without_middleware_reports_are_unchanged() -> None:
    plain = diagnose(hop_inputs()).findings[0]
    packaged = diagnose(hop_inputs(app_packages=("catalog",), sync_middleware=[
        {"path": "django.middleware.common.CommonMiddleware", "kind": "sync_hooks", "hooks": ["process_request"],
         "hops": 1},
        {"path": "catalog.Broken", "kind": "unimportable", "hooks": [], "hops": None, "error": "ImportError: x"},
        {"kind": "sync_only"},  # malformed: no path
    ])).findings[0]
    assert plain == packaged
    assert plain.detail.startswith("6.0 sync<->async hops per request, caused by SecurityMiddleware (1.0/request)")
    assert "sync_middleware" not in plain.evidence
    assert plain.try_.startswith("make the middleware async-capable")


def test_thread_hops_app_packages_match_dotted_prefixes() -> None:
    (f,) = diagnose(hop_inputs(sync_middleware=SHOP_MIDDLEWARE, app_packages=("catalog.middleware",))).findings
    assert "your middleware catalog.middleware.RequestTimingMiddleware" in f.detail
    (g,) = diagnose(hop_inputs(sync_middleware=SHOP_MIDDLEWARE, app_packages=("cat",))).findings
    assert "your middleware" not in g.detail  # a prefix of a name is not its package


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


# --- advice that fits the mode that ran -----------------------------------------------------------


def http_finding(**kw: Any) -> F.Finding:
    (f,) = [f for f in diagnose(FindingInputs(cpu_shares={"http_server": 0.3}, **kw)).findings
            if f.evidence.get("cpu_http_server_share")]
    return f


@pytest.mark.parametrize(("mode", "loop", "install"), [
    ("uvicorn", "asyncio", "install httptools and uvloop"),
    ("async", "uvloop", "install httptools (pip install 'asyncprof[uvicorn]'"),
    ("uvicorn", None, "install httptools (pip install 'asyncprof[uvicorn]'"),
])
def test_h11_under_uvicorn_means_installing_httptools(mode: str, loop: str | None, install: str) -> None:
    f = http_finding(interface="asgi", mode=mode, http_parser="h11", loop=loop)
    assert f.title == "Pure-Python HTTP parsing" and install in f.try_
    if loop != "asyncio":
        assert "uvloop" not in f.try_.split("(")[0]


def test_uvicorn_with_httptools_on_asyncio_suggests_only_uvloop() -> None:
    f = http_finding(interface="asgi", mode="uvicorn", http_parser="httptools", loop="asyncio")
    assert f.title == "HTTP server CPU" and f.try_.startswith("install uvloop (")
    f = http_finding(interface="asgi", mode="uvicorn", http_parser="httptools", loop="uvloop")
    assert "already parses with httptools on uvloop" in f.try_ and "install" not in f.try_


def test_h11_under_hypercorn_is_hypercorns_own_parser() -> None:
    top = {"http_server": [{"function": "Connection.send (h11/_connection.py)"},
                           {"function": "H11Protocol.stream_send (hypercorn/protocol/h11.py)"}]}
    f = http_finding(interface="asgi", mode="hypercorn", http_parser="h11", loop="asyncio", cpu_top=top)
    assert f.title == "Pure-Python HTTP parsing"
    assert "h11 is hypercorn's HTTP/1.1 parser" in f.try_
    assert "--mode uvicorn with httptools" in f.try_ and "--mode granian-asgi" in f.try_
    assert "install httptools" not in f.try_ and "uvicorn[standard]" not in f.try_
    assert "server: hypercorn" in f.detail
    # A run without a recorded mode is told by its top functions.
    assert "hypercorn's HTTP/1.1 parser" in http_finding(interface="asgi", http_parser="h11", cpu_top=top).try_


@pytest.mark.parametrize(("mode", "interface", "title", "says", "never"), [
    ("daphne", "asgi", "Pure-Python HTTP parsing", "twisted.web", "install httptools"),
    ("granian-asgi", "asgi", "HTTP server CPU", "granian parses HTTP in Rust", "install"),
    ("granian-wsgi", "wsgi", "HTTP server CPU", "granian parses HTTP in Rust", "gunicorn"),
    ("sync", "wsgi", "Pure-Python HTTP parsing", "gunicorn's sync workers parse HTTP in Python", "httptools"),
    ("gthread", "wsgi", "Pure-Python HTTP parsing", "gunicorn's gthread workers parse", "sync worker"),
    ("gevent", "wsgi", "Pure-Python HTTP parsing", "gunicorn's gevent workers parse", "sync worker"),
])
def test_http_server_advice_per_mode(mode: str, interface: str, title: str, says: str, never: str) -> None:
    f = http_finding(interface=interface, mode=mode, workers=4, cpus_usable=2)
    assert f.title == title and says in f.try_ and never not in f.try_
    assert "more workers" not in f.try_  # 4 workers on 2 cores already


def test_gunicorn_suggests_more_workers_only_below_the_cores() -> None:
    assert "more workers spread it (--workers: 2 on 4 usable cores)" in http_finding(
        interface="wsgi", mode="sync", workers=2, cpus_usable=4).try_


QUEUE = {"attribution_ms": breakdown(server_queue=60.0), "workers": 4, "users": 50}


@pytest.mark.parametrize(("mode", "threads", "slots", "says", "never"), [
    ("sync", None, 4, "--mode gthread (--threads) or gevent", "worker_connections"),
    ("gthread", 4, 16, "more --threads when requests mostly wait on I/O", "--mode gthread"),
    ("granian-wsgi", 2, 8, "more --threads", "--mode gthread"),
    ("gevent", None, 4000, "accepts up to worker_connections", "--threads"),
    ("uvicorn", None, None, "ASGI workers accept every connection", "--threads"),
    ("hypercorn", None, None, "ASGI workers accept every connection", "--mode gthread"),
])
def test_server_queue_advice_per_mode(mode: str, threads: int | None, slots: int | None, says: str,
                                      never: str) -> None:
    interface = "asgi" if mode in ("uvicorn", "hypercorn") else "wsgi"
    (f,) = diagnose(FindingInputs(mode=mode, threads=threads, interface=interface, **QUEUE)).findings
    assert f.title == "Requests queue before a worker takes them"
    assert says in f.try_ and never not in f.try_
    assert f.evidence["request_slots"] == slots
    if slots is not None and slots < 50:
        assert f"50 users for {slots} request slots" in f.detail and f"about {50 - slots} wait" in f.detail
    else:
        assert "wait for a free slot" not in f.detail


def test_event_loop_advice_fits_workers_loop_and_server() -> None:
    att = breakdown(event_loop=30.0)
    saturated = diagnose(FindingInputs(attribution_ms=att, interface="asgi", mode="uvicorn", workers=4,
                                       cpus_usable=2, loop="asyncio")).findings[0]
    assert "add workers" not in saturated.try_ and "no more workers than usable cores (4 on 2)" in saturated.try_
    assert "install uvloop" in saturated.try_
    few = diagnose(FindingInputs(attribution_ms=att, interface="asgi", mode="uvicorn", workers=1, cpus_usable=2,
                                 loop="uvloop")).findings[0]
    assert "add workers up to the core count (--workers: 1 on 2 usable cores)" in few.try_ and "uvloop" not in few.try_
    hyper = diagnose(FindingInputs(attribution_ms=att, interface="asgi", mode="hypercorn", workers=2, cpus_usable=2,
                                   loop="asyncio")).findings[0]
    assert "--worker-class uvloop" in hyper.try_ and "workers" not in hyper.try_.split("uvloop")[0]
    daphne = diagnose(FindingInputs(attribution_ms=att, interface="asgi", mode="daphne", loop="asyncio")).findings[0]
    assert "uvloop" not in daphne.try_
    gevent = diagnose(FindingInputs(attribution_ms=att, interface="wsgi", mode="gevent")).findings[0]
    assert "busy gevent hub" in gevent.detail and "without yielding" in gevent.try_


@pytest.mark.parametrize(("kw", "says"), [
    ({"mode": "gthread", "interface": "wsgi", "threads": 8}, "the 8 threads of each worker share one GIL"),
    ({"mode": "granian-wsgi", "interface": "wsgi", "threads": 4}, "fewer --threads"),
    ({"mode": "uvicorn", "interface": "asgi"}, "fewer sync<->async hops"),
    ({"mode": "sync", "interface": "wsgi"}, "background threads"),
])
def test_gil_advice_per_mode(kw: dict[str, Any], says: str) -> None:
    (f,) = diagnose(FindingInputs(attribution_ms=breakdown(gil_wait=20.0), **kw)).findings
    assert says in f.try_


@pytest.mark.parametrize(("kw", "says"), [
    ({"interface": "asgi", "mode": "uvicorn"}, "a connection pool"),
    ({"interface": "wsgi", "mode": "sync"}, "CONN_MAX_AGE keeps one per worker thread"),
    ({"interface": "wsgi", "mode": "gthread"}, "CONN_MAX_AGE keeps one per worker thread"),
    ({"interface": "wsgi", "mode": "gevent"}, "one per greenlet"),
])
def test_db_connect_advice_per_mode(kw: dict[str, Any], says: str) -> None:
    (f,) = diagnose(FindingInputs(attribution_ms=breakdown(db_connect=20.0), **kw)).findings
    assert says in f.try_


def test_run_queue_names_threads_of_threaded_modes() -> None:
    (f,) = diagnose(FindingInputs(attribution_ms=breakdown(os_run_queue=20.0), mode="gthread", interface="wsgi",
                                  threads=4, workers=2, cpus_usable=2)).findings
    assert "2 workers × 4 threads on 2 usable cores" in f.detail and "share its GIL" in f.try_


# --- breakdown categories beyond the ones these findings were written for ------------------------


def test_upstream_wait_is_named_with_advice_per_interface() -> None:
    att = {**breakdown(), "upstream_wait": 30.0, "db_wait": 70.0}
    (f,) = diagnose(FindingInputs(attribution_ms=att, interface="asgi", mode="uvicorn")).findings
    assert f.title == "Waiting for other HTTP services" and f.share == pytest.approx(0.3)
    assert "httpx.AsyncClient" in f.try_
    (f,) = diagnose(FindingInputs(attribution_ms=att, interface="wsgi", mode="sync", workers=4)).findings
    assert "requests.Session" in f.try_ and "--mode gthread or gevent" in f.try_
    (f,) = diagnose(FindingInputs(attribution_ms=att, interface="wsgi", mode="gthread", workers=4, threads=4)).findings
    assert "4 threads per gunicorn gthread worker" in f.try_ and "--mode gthread" not in f.try_
    below = {**breakdown(), "upstream_wait": 9.9, "db_wait": 90.1}
    assert titles(attribution_ms=below, interface="asgi") == []


def test_unknown_categories_get_a_generic_finding_and_missing_ones_no_error() -> None:
    att = {**breakdown(), "cache_wait": 25.0, "db_wait": 75.0}
    (f,) = diagnose(FindingInputs(attribution_ms=att)).findings
    assert f.title == "Time in cache_wait" and f.share == pytest.approx(0.25) and f.share_of == "latency"
    # A breakdown without some of today's categories (an older or newer attribution) still diagnoses.
    sparse = {"cpu": 20.0, "server_queue": 80.0}
    assert titles(attribution_ms=sparse, interface="asgi", mode="uvicorn") == [
        "Requests queue before a worker takes them"]


def test_server_queue_with_more_slots_than_users_is_not_a_slot_wait() -> None:
    kw = {**QUEUE, "users": 10}
    (f,) = diagnose(FindingInputs(mode="granian-wsgi", interface="wsgi", threads=4, **kw)).findings
    assert "10 users for 16 request slots" in f.detail and "wait for a free slot" not in f.detail
    assert "outnumber the 10 users" in f.try_ and "--threads" not in f.try_
    (f,) = diagnose(FindingInputs(mode="sync", interface="wsgi", **kw)).findings
    assert "about 6 wait for a free slot" in f.detail and "--mode gthread" in f.try_


def test_without_a_mode_no_slot_count_or_sync_only_advice_is_given() -> None:
    (f,) = diagnose(FindingInputs(interface="wsgi", **QUEUE)).findings
    assert "request slots" not in f.detail and "--mode gthread" not in f.try_
    assert f.try_ == "the workers are all busy: see the capacity line for what limits them"
