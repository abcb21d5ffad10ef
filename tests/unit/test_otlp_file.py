"""The in-worker exporter writes spec-shaped OTLP/JSON that our reader reads back."""

from pathlib import Path

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from asyncprof.analysis.spans import index_spans
from asyncprof.worker.otlp_file import OtlpJsonFileExporter


def test_spans_round_trip_with_hex_ids_kinds_and_parents(tmp_path: Path) -> None:
    path = tmp_path / "spans" / "42.jsonl"
    provider = TracerProvider(resource=Resource.create({"process.pid": 42, "service.name": "t"}))
    provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileExporter(path)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as server:
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes={"db.statement": "SELECT 1"}):
            pass
    provider.shutdown()

    lines = path.read_bytes().splitlines()
    spans = [s for line in lines for rs in orjson.loads(line)["resourceSpans"]
             for ss in rs["scopeSpans"] for s in ss["spans"]]
    by_name = {s["name"]: s for s in spans}
    trace_id = format(server.get_span_context().trace_id, "032x")
    assert by_name["GET /x"]["traceId"] == trace_id and len(trace_id) == 32
    assert by_name["GET /x"]["kind"] == 2  # OTLP SPAN_KIND_SERVER
    assert by_name["SELECT"]["kind"] == 3  # OTLP SPAN_KIND_CLIENT
    assert by_name["SELECT"]["parentSpanId"] == by_name["GET /x"]["spanId"]
    assert "parentSpanId" not in by_name["GET /x"]
    assert int(by_name["SELECT"]["endTimeUnixNano"]) >= int(by_name["SELECT"]["startTimeUnixNano"])
    assert {"key": "db.statement", "value": {"stringValue": "SELECT 1"}} in by_name["SELECT"]["attributes"]

    index = index_spans(path.parent)
    assert index.spans == 2
    assert index.server_trace_ids == {trace_id}
    assert index.by_pid == {42: 2}


def test_damaged_span_lines_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "1.jsonl").write_bytes(b'{"resourceSpans": [}\n{"nope": 1}\n')
    assert index_spans(tmp_path).spans == 0
