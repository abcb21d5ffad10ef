"""``--view``: the other flavour of view under each interface, so Django's adaptation cost shows on its own.

An async view under a WSGI server runs through ``async_to_sync`` (an event loop in a thread for every
request); a sync view under an ASGI server runs through ``sync_to_async`` (a hop to a worker thread
and back).  Both must record cleanly, name the flavour that ran, and show the crossings in the breakdown.
"""

from pathlib import Path

import pytest

from tests.integration.helpers import SHORT, asyncprof, only_run, report_json

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("mode", "view"), [("sync", "async"), ("async", "sync")])
def test_the_other_view_flavour_records_and_shows_its_crossings(mode: str, view: str, traces: Path,
                                                                 service_url: str) -> None:
    proc = asyncprof("record", "--mode", mode, "--view", view, "--db", service_url, "--out", str(traces), *SHORT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = report_json(only_run(traces))
    assert r["view"] == view and r["mode"] == mode
    assert [e["name"] for e in r["endpoints"]] == [f"{view}/seed"]
    assert r["errors"] == 0 and r["requests"] > 0
    assert r["queries_per_request"] >= 2
    # The adaptation is a sync<->async crossing per request at least, and it costs time.
    assert r["hops_per_request"] >= 1, r["hops_per_request"]
    assert r["attribution_ms"]["thread_hop"] > 0, r["attribution_ms"]
    a, latency = r["attribution_ms"], r["latency_ms"]["mean"]
    assert abs(sum(a.values()) - latency) <= 0.05 * latency, (a, latency)
