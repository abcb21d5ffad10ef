"""Every request accounted for: matched, or unmatched with a reason; span drops counted in the worker."""

import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from asyncprof.analysis.completeness import REASONS, account_requests, describe_unmatched, span_totals
from asyncprof.analysis.requests import RequestLog
from asyncprof.worker.span_counts import CountingExporter, EndedSpans, counts


def _log(rows: list[tuple[str, int, bool]]) -> RequestLog:
    """(trace id, status, sampled) per request."""
    log = RequestLog()
    for i, (trace_id, status, sampled) in enumerate(rows):
        log.start.append(1000.0 + i)
        log.name.append("/items/")
        log.status.append(status)
        log.latency_ms.append(5.0)
        log.nbytes.append(10)
        log.trace_id.append(trace_id)
        log.error.append("" if status and status < 400 else "boom")
        log.lag_ms.append(None)
        log.span_id.append("")
        log.sampled.append(sampled)
    return log


def test_all_matched_is_complete() -> None:
    log = _log([(f"t{i}", 200, True) for i in range(200)])
    out = account_requests(log, {f"t{i}" for i in range(200)}, 1.0, [{"ended": 400, "written": 400}])
    assert out["matched"] == out["expected"] == 200 and out["match_rate"] == 1.0 and out["complete"] is True
    assert set(out["unmatched"]) == set(REASONS) and not any(out["unmatched"].values())
    assert describe_unmatched(out["unmatched"]) == ""


def test_each_unmatched_request_gets_one_reason_in_order() -> None:
    rows = [(f"t{i}", 200, True) for i in range(90)]
    rows += [("", 0, True)]                      # dropped by the generator: no trace id
    rows += [("tc", 0, True)]                    # connection refused
    rows += [("tl1", 200, True), ("tl2", 200, True)]  # 2 spans lost in a worker
    rows += [("tx", 200, True)]                  # nothing explains it
    log = _log(rows)
    out = account_requests(log, {f"t{i}" for i in range(90)}, 1.0,
                           [{"ended": 100, "written": 97, "write_failed": 1}, {"ended": 50, "written": 50}])
    assert out["expected"] == 95 and out["matched"] == 90
    assert out["unmatched"] == {"not_sent": 1, "no_response": 1, "spans_lost": 3, "worker_unflushed": 0,
                                "error_response": 0, "unexplained": 0}, out
    # three spans were lost (2 dropped, 1 failed write): three requests may have lost theirs
    assert out["spans"]["lost"] == 2 and out["spans"]["write_failed"] == 1
    assert out["complete"] is False and out["match_rate"] == round(90 / 95, 4)
    assert "1 no response (connection failed)" in describe_unmatched(out["unmatched"])


def test_a_killed_worker_and_5xx_without_span() -> None:
    log = _log([("a", 200, True), ("b", 502, True), ("c", 200, True)])
    killed = account_requests(log, {"a"}, 1.0, [{"ended": 5, "written": 5}, None])
    assert killed["unmatched"]["worker_unflushed"] == 2 and killed["spans"]["workers_uncounted"] == 1
    clean = account_requests(log, {"a"}, 1.0, [{"ended": 5, "written": 5}])
    assert clean["unmatched"]["error_response"] == 1 and clean["unmatched"]["unexplained"] == 1


def test_unsampled_requests_are_not_owed_a_span() -> None:
    log = _log([("a", 200, True), ("b", 200, False), ("c", 200, False), ("d", 200, True)])
    out = account_requests(log, {"a", "d"}, 0.5, [])
    assert out["not_sampled"] == 2 and out["expected"] == 2 and out["match_rate"] == 1.0
    # at rate 1 every request is owed one, whatever its flag says
    assert account_requests(log, {"a", "d"}, 1.0, [])["unmatched"]["unexplained"] == 2


def test_span_totals_ignore_garbage() -> None:
    totals = span_totals([{"ended": "x", "written": -3}, {"ended": True}, 7, None])  # type: ignore[list-item]
    assert totals["ended"] == 0 and totals["workers_counted"] == 2 and totals["workers_uncounted"] == 2


class _SlowExporter(SpanExporter):
    """Takes 50 ms per batch, so a small queue overflows."""

    def export(self, spans):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return SpanExportResult.SUCCESS


class _FailingExporter(SpanExporter):
    def export(self, spans):  # type: ignore[no-untyped-def]
        raise ConnectionError("collector unreachable")


def test_the_sdk_drops_are_counted_in_the_worker() -> None:
    """A real TracerProvider whose batch queue overflows: ended - written is what it dropped."""
    provider = TracerProvider()
    ended = EndedSpans()
    file = CountingExporter(_SlowExporter())
    live = CountingExporter(_FailingExporter())
    provider.add_span_processor(ended)
    provider.add_span_processor(BatchSpanProcessor(file, max_queue_size=8, max_export_batch_size=4,
                                                   schedule_delay_millis=5))
    provider.add_span_processor(BatchSpanProcessor(live, max_queue_size=1000))
    tracer = provider.get_tracer("test")
    for _ in range(300):
        with tracer.start_as_current_span("s"):
            pass
    provider.shutdown()
    c = counts(ended, file, live)
    assert c["ended"] == 300
    assert 0 < c["written"] < 300 and c["write_failed"] == 0  # the queue of 8 overflowed
    assert c["otlp_sent"] == 0 and c["otlp_failed"] == 300  # every batch raised: all counted as failed
    totals = span_totals([c])
    assert totals["lost"] == 300 - c["written"]
