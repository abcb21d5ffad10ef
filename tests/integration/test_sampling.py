"""A recording with the default sample: the per-request instruments follow exactly the sampled requests.

``--sample-traces`` defaults to a small fraction (``config.DEFAULT_SAMPLE_TRACES``) so the
instruments' cost stays within budget.  These runs leave ``ASYNCPROF_SAMPLE_TRACES`` unset (the
other tests set it to 1) and check, in a WSGI and an ASGI mode, that the load generator's choice is
followed end to end: a record and a server span for each sampled request and for no other, the
report's breakdown and match rates over the sample, and the worker summaries counting every request.
"""

import math
from pathlib import Path

import pytest

from asyncprof.analysis.requests import read_request_log
from asyncprof.analysis.spans import iter_spans
from asyncprof.config import DEFAULT_SAMPLE_TRACES
from asyncprof.loadgen.trace_sampling import keeps, sample_bound
from tests.integration.helpers import asyncprof, manifest, only_run, report_json

pytestmark = pytest.mark.integration

RUN = ["--duration", "8", "--warmup", "1.5", "--users", "10", "--workers", "2", "--no-pyspy"]
SERVER_KIND = {"SPAN_KIND_SERVER", 2}


def _record_ids(run: Path) -> list[str]:
    ids = []
    for path in (run / "accounting").glob("*.tsv"):
        ids += [line.split("\t", 1)[0] for line in path.read_text().splitlines()[1:] if line]
    return ids


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_default_sample_is_followed_end_to_end(traces: Path, service_url: str, mode: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCPROF_SAMPLE_TRACES")
    proc = asyncprof("record", "--mode", mode, "--db", service_url, "--out", str(traces), *RUN, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(traces)
    m = manifest(run)
    assert m["instruments"]["otel"]["sample_traces"] == DEFAULT_SAMPLE_TRACES < 1

    # The load generator's choice: the trace-id rule, for about the stated fraction.
    log = read_request_log(run / "requests.tsv")
    bound = sample_bound(DEFAULT_SAMPLE_TRACES)
    assert all(s == keeps(t, bound) for t, s in zip(log.trace_id, log.sampled, strict=True))
    n, k = len(log), sum(log.sampled)
    sd = math.sqrt(n * DEFAULT_SAMPLE_TRACES * (1 - DEFAULT_SAMPLE_TRACES))
    assert n > 300 and abs(k - n * DEFAULT_SAMPLE_TRACES) < 5 * sd + 1, (n, k)

    # The workers followed it: a record for sampled traces only, a server span for sampled traces only.
    ids = _record_ids(run)
    records = [t for t in ids if t]  # without a trace id: asyncprof's readiness probe, no traceparent
    assert len(ids) - len(records) <= 3
    assert records and all(keeps(t, bound) for t in records), "a request outside the sample has a record"
    spans = [(span, resource) for resource, span in iter_spans(run / "spans")]
    span_traces = {span["traceId"] for span, _ in spans}
    assert span_traces and all(keeps(t, bound) for t in span_traces), "a span outside the sample"
    sampled_ids = {t for t, s in zip(log.trace_id, log.sampled, strict=True) if s}
    assert sampled_ids <= set(records)
    servers = {span["traceId"] for span, _ in spans if span.get("kind") in SERVER_KIND}
    assert sampled_ids <= servers

    # The report: the breakdown and both match rates are over the sample, and nothing is flagged.
    report = report_json(run)
    acc, otel = report["accounting"], report["instruments"]["otel"]
    # (the log holds the warm-up too; the report, the measured window)
    assert 0 < acc["matched_requests"] < len(sampled_ids) and acc["match_rate"] == 1.0
    assert acc["unmatched_requests"] == 0
    assert otel["match_rate"] == 1.0 and otel["match_rate_over"] == "sampled traces"
    assert otel["sampled_requests"] == acc["matched_requests"]
    assert not [w for w in report["warnings"] if "below 99%" in w], report["warnings"]
    assert report["attribution_ms"]["cpu"] > 0 and report["attribution_ms"]["db_wait"] > 0
    # Every request served is counted by the workers, in the sample or not (warm-up included).
    workers = acc["workers"]
    assert workers["requests"] >= n > workers["accounted"] == len(ids)
    if mode == "async":
        # The seed's 14 sync middleware hops per request, counted over the sampled requests.
        assert report["hops_per_request"] == pytest.approx(14, abs=0.5)
        hop = next(f for f in report["findings"] if "hop_sites" in f["evidence"])
        sites = hop["evidence"]["hop_sites"]
        assert sites and all(s["per_request"] == pytest.approx(1.0, abs=0.05) for s in sites), sites
