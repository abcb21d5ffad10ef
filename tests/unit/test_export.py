"""`asyncprof export`: Jaeger JSON, OTLP/JSON lines and OTLP pushes of a run's traces.

The run here is synthetic but its spans are the real thing: written by the worker's own OTLP/JSON
file exporter from a real TracerProvider, each server span joined to the trace the "load
generator" logged, as the ASGI/WSGI middleware joins the traceparent Locust sends.
"""

import base64
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry import trace as trace_api
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from asyncprof.analysis.traces import TraceSource, derived_span_id
from asyncprof.cli import main
from asyncprof.exporters.run_export import export_run
from asyncprof.loadgen.request_log import REQUEST_LOG_HEADER
from asyncprof.loadgen.trace_sampling import keeps, sample_bound
from asyncprof.renderers.jaeger_json import write_jaeger
from asyncprof.run import Run
from asyncprof.worker.otlp_file import OtlpJsonFileExporter
from tests.jaeger_check import check_jaeger
from tests.otlp_receiver import OtlpReceiver, whole_traces

T0 = 1_795_868_000.0


def _ids(i: int) -> tuple[str, str]:
    trace_id = f"{(0x9E3779B97F4A7C15 * (i + 1)) % (1 << 128) or 1:032x}"
    return trace_id, f"{0xC0FFEE00 + i:016x}"


def make_run(tmp_path: Path, n: int = 20, *, legacy: bool = False, sampled_every: int = 1,
             extra_attrs: dict[str, Any] | None = None, profile: int | None = 3) -> Run:
    """A run of *n* requests (request 5 a 500, request 7 without a server span) with real span files."""
    run = Run.create(tmp_path / "traces", "sync-seed")
    run.update(config={"scenario": "seed", "view": "sync", "mode": "sync"},
               server={"host": "127.0.0.1", "port": 8123},
               window={"start_unix": T0 + 0.2, "end_unix": T0 + 100},
               instruments={"otel": {"enabled": True, "sample_traces": 1.0 / sampled_every}})
    provider = TracerProvider(resource=Resource.create({"service.name": "asyncprof-target", "process.pid": 4242}))
    provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileExporter(run.spans_dir / "4242.jsonl")))
    tracer = provider.get_tracer("opentelemetry.instrumentation.wsgi", "0.66b1")
    db_tracer = provider.get_tracer("opentelemetry.instrumentation.psycopg2", "0.66b1")
    lines = [REQUEST_LOG_HEADER if not legacy else "start\tname\tstatus\tlatency_ms\tbytes\ttrace_id\terror\tlag_ms\n"]
    for i in range(n):
        trace_id, client_id = _ids(i)
        start = T0 + i * 0.1
        sampled = i % sampled_every == 0
        status = 500 if i == 5 else 200
        error = "HTTPError('500 Server Error')" if i == 5 else ""
        row = f"{start:.6f}\tsync/seed\t{status}\t12.500\t1200\t{trace_id}\t{error}\t"
        lines.append(row + ("\n" if legacy else f"\t{client_id}\t{1 if sampled else 0}\n"))
        if i == 7 or not sampled:
            continue  # no server span: refused, or not sampled
        parent = SpanContext(int(trace_id, 16), int(client_id, 16), is_remote=True,
                             trace_flags=TraceFlags(TraceFlags.SAMPLED))
        ctx = trace_api.set_span_in_context(NonRecordingSpan(parent))
        t0 = int((start + 0.001) * 1e9)
        attrs = {"http.method": "GET", "http.target": "/sync/seed/", "asyncprof.cpu_ms": 1.5,
                 "asyncprof.event_loop_ms": 0.0, **(extra_attrs or {})}
        server = tracer.start_span("GET /sync/seed/", context=ctx, kind=SpanKind.SERVER, start_time=t0,
                                   attributes=attrs)
        with trace_api.use_span(server, end_on_exit=False):
            for q in range(2):
                db = db_tracer.start_span("SELECT", kind=SpanKind.CLIENT, start_time=t0 + (q + 1) * 1_000_000,
                                          attributes={"db.system": "postgresql",
                                                      "db.statement": "SELECT id FROM item LIMIT 20"})
                db.end(end_time=t0 + (q + 2) * 1_000_000)
        server.end(end_time=t0 + 10_000_000)
    provider.shutdown()
    run.requests_path.write_text("".join(lines))
    if profile is not None:
        (run.profiles_dir / f"{_ids(profile)[0]}.pyisession").write_text("{}")
    return run


def _jaeger(run: Run, **kwargs: Any) -> tuple[dict[str, Any], Any]:
    out = run.path / "x.json"
    with open(out, "wb") as f:
        result = write_jaeger(TraceSource(run, **kwargs), f)
    return json.loads(out.read_text()), result


def test_jaeger_export_has_the_fields_the_ui_needs_and_whole_traces(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    doc, result = _jaeger(run)
    assert check_jaeger(doc) == []
    traces = {t["traceID"]: t for t in doc["data"]}
    assert len(traces) == 20 == result.traces  # one trace per client request
    assert result.parentage.client_requests == 20 and result.parentage.complete == 19  # request 7: no server span
    t = traces[_ids(3)[0]]
    assert [s["operationName"] for s in t["spans"]] == ["GET /sync/seed/", "GET /sync/seed/", "SELECT", "SELECT"]
    client, server, db, _ = t["spans"]
    services = {pid: p["serviceName"] for pid, p in t["processes"].items()}
    assert services[client["processID"]] == "asyncprof-loadgen" and services[server["processID"]] == "asyncprof-target"
    assert client["spanID"] == _ids(3)[1] and client["references"] == []
    assert server["references"] == [{"refType": "CHILD_OF", "traceID": t["traceID"], "spanID": client["spanID"]}]
    assert db["references"][0]["spanID"] == server["spanID"]
    # Microseconds: the client span starts at the logged time and lasts the logged latency.
    assert client["startTime"] == round((T0 + 0.3) * 1e6) and client["duration"] == 12_500
    assert server["duration"] == 10_000 and db["duration"] == 1_000
    tags = {x["key"]: x for x in server["tags"]}
    assert tags["asyncprof.cpu_ms"] == {"key": "asyncprof.cpu_ms", "type": "float64", "value": 1.5}
    assert tags["span.kind"]["value"] == "server"
    assert tags["asyncprof.profile"]["value"].endswith(f"profiles/{t['traceID']}.pyisession")
    ctags = {x["key"]: x["value"] for x in client["tags"]}
    assert ctags["http.url"] == "http://127.0.0.1:8123/sync/seed/" and ctags["http.status_code"] == 200
    assert ctags["span.kind"] == "client" and ctags["asyncprof.in_window"] is True
    failed = {x["key"]: x["value"] for x in traces[_ids(5)[0]]["spans"][0]["tags"]}
    assert failed["error"] is True and failed["otel.status_code"] == "ERROR"
    # Only the profiled request's server span names a profile.
    profiled = [tr for tr in doc["data"] for s in tr["spans"] for x in s["tags"] if x["key"] == "asyncprof.profile"]
    assert len(profiled) == 1


def test_partitioned_jaeger_export_writes_the_same_traces(tmp_path: Path) -> None:
    run = make_run(tmp_path, n=60)
    whole, _ = _jaeger(run)
    out = run.path / "parts.json"
    with open(out, "wb") as f:
        result = write_jaeger(TraceSource(run), f, partition_bytes=2048, tmp_dir=tmp_path)
    assert result.partitions > 3
    parts = json.loads(out.read_text())
    assert check_jaeger(parts) == []

    def key(doc: dict[str, Any]) -> dict[str, list[str]]:
        return {t["traceID"]: sorted(s["spanID"] for s in t["spans"]) for t in doc["data"]}

    assert key(parts) == key(whole) and result.parentage.complete == 59
    assert not list(tmp_path.glob("asyncprof-jaeger-*"))  # the partitions are gone


def _otlp_lines_to_protobuf(lines: list[bytes]) -> list[ExportTraceServiceRequest]:
    """Parse OTLP/JSON strictly (unknown fields fail) after turning hex ids into protobuf's base64."""
    out = []
    for line in lines:
        doc = orjson.loads(line)
        for rs in doc["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    for k in ("traceId", "spanId", "parentSpanId"):
                        if k in s:
                            s[k] = base64.b64encode(bytes.fromhex(s[k])).decode()
        out.append(json_format.Parse(orjson.dumps(doc), ExportTraceServiceRequest()))
    return out


def test_otlp_lines_are_valid_otlp_json_with_client_spans(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    out = tmp_path / "run.jsonl"
    summary = export_run(run, "otlp", output=out)
    requests = _otlp_lines_to_protobuf(out.read_bytes().splitlines())
    spans = [(rs, s) for r in requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == summary.spans == 20 + 19 * 3
    clients = [s for rs, s in spans if rs.resource.attributes[0].value.string_value == "asyncprof-loadgen"]
    assert len(clients) == 20 and all(s.kind == s.SPAN_KIND_CLIENT and not s.parent_span_id for s in clients)
    assert {s.span_id.hex() for s in clients} == {_ids(i)[1] for i in range(20)}
    assert (out.stat().st_mode & 0o777) == 0o600


def test_push_to_an_otlp_http_receiver_keeps_parentage(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    with OtlpReceiver() as receiver:
        summary = export_run(run, "otlp", endpoint=receiver.url)
    assert receiver.bad_requests == 0 and receiver.paths == {"/v1/traces"}
    assert receiver.content_types == {"application/x-protobuf"}
    assert len(receiver.spans) == summary.spans == 20 + 19 * 3
    traces = receiver.by_trace()
    assert len(traces) == 20
    assert whole_traces(traces, "asyncprof-loadgen") == (20, 19)
    server = next(s for s in traces[_ids(3)[0]] if s.kind == 2)
    assert server.attributes["asyncprof.cpu_ms"] == 1.5 and "asyncprof.profile" in server.attributes
    assert next(s for s in traces[_ids(5)[0]] if s.service == "asyncprof-loadgen").attributes["http.status_code"] == 500


def test_push_to_nothing_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # the exporter's retries stop within a second
    run = make_run(tmp_path, n=2)
    receiver = OtlpReceiver().start()
    url = receiver.url
    receiver.stop()
    from asyncprof.exporters.push import ExportFailed

    with pytest.raises(ExportFailed, match=r"did not accept spans: (\[Errno 111\] )?Connection refused"):
        export_run(run, "otlp", endpoint=url)


def test_sampling_keeps_whole_traces_consistently(tmp_path: Path) -> None:
    run = make_run(tmp_path, n=200)
    doc, result = _jaeger(run, rate=0.25)
    assert check_jaeger(doc) == []
    kept = {t["traceID"] for t in doc["data"]}
    bound = sample_bound(0.25)
    assert kept == {_ids(i)[0] for i in range(200) if keeps(_ids(i)[0], bound)}
    assert 20 < len(kept) < 80
    # Every kept trace still holds its client, server and database spans.
    assert result.parentage.client_requests == len(kept)
    assert result.parentage.complete == len(kept) - (_ids(7)[0] in kept)
    # A smaller rate keeps a subset of what a larger one kept.
    smaller = {t["traceID"] for t in _jaeger(run, rate=0.1)[0]["data"]}
    assert smaller <= kept


def test_unsampled_requests_of_a_sampled_run_have_no_trace(tmp_path: Path) -> None:
    run = make_run(tmp_path, n=30, sampled_every=3)
    doc, result = _jaeger(run)
    assert len(doc["data"]) == 10 == result.parentage.client_requests
    summary = export_run(run, "jaeger", output=tmp_path / "x.json")
    assert any("20 left out by trace sampling" in line for line in summary.lines)


def test_legacy_logs_take_the_client_span_id_from_the_server_spans_parent(tmp_path: Path) -> None:
    run = make_run(tmp_path, legacy=True)
    doc, result = _jaeger(run)
    assert check_jaeger(doc) == []
    assert result.parentage.complete == 19
    refused = next(t for t in doc["data"] if t["traceID"] == _ids(7)[0])
    assert [s["spanID"] for s in refused["spans"]] == [derived_span_id(_ids(7)[0])]
    with OtlpReceiver() as receiver:
        export_run(run, "otlp", endpoint=receiver.url)
    assert whole_traces(receiver.by_trace(), "asyncprof-loadgen") == (20, 19)


def test_exported_spans_carry_no_secrets(tmp_path: Path) -> None:
    run = make_run(tmp_path, n=3, extra_attrs={
        "http.request.header.authorization": "Bearer s3cr3t-token",
        "http.request.header.cookie": "sessionid=abc123",
        "http.url": "http://admin:hunter22@127.0.0.1:8123/sync/seed/",
        "db.connection_string": "host=db user=app password=hunter22 dbname=x",
        "app.note": "postgresql://app:hunter22@db:5432/x",
    })
    for fmt, name in (("jaeger", "x.json"), ("otlp", "x.jsonl")):
        export_run(run, fmt, output=tmp_path / name)
        text = (tmp_path / name).read_text()
        assert "hunter22" not in text and "s3cr3t" not in text and "abc123" not in text
        assert "admin:***@127.0.0.1" in text and "password=***" in text


def test_cli_export_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, n=2)
    assert main(["export", "jaeger", str(run.path)]) == 2  # no -o
    assert main(["export", "jaeger", str(run.path), "--endpoint", "http://127.0.0.1:1"]) == 2
    assert main(["export", "otlp", str(run.path), "-o", str(tmp_path / "nope" / "x.jsonl")]) == 2
    assert main(["export", "otlp", str(run.path), "-o", str(tmp_path / "x.jsonl"), "--sample-traces", "0"]) == 2
    capsys.readouterr()

    bad = tmp_path / "bad.jsonl"
    (run.spans_dir / "4243.jsonl").write_bytes(b"\x00\x01 not json\n")
    assert main(["export", "jaeger", str(run.path), "-o", str(bad)]) == 3
    err = capsys.readouterr().err
    assert "4243.jsonl is not OTLP/JSON lines" in err and len(err.strip().splitlines()) == 1
    assert not bad.exists() and not list(tmp_path.glob(".bad.jsonl.*"))

    (run.spans_dir / "4243.jsonl").unlink()
    with open(run.spans_dir / "4242.jsonl", "ab") as f:
        f.write(b'{"resourceSpans": [\n')  # a worker killed mid-line: skipped, said once
    assert main(["export", "jaeger", str(run.path), "-o", str(tmp_path / "ok.json")]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 damaged line of 4242.jsonl" in err and "wrote 2 traces" in err

    for f in run.spans_dir.glob("*.jsonl"):
        f.unlink()
    assert main(["export", "jaeger", str(run.path), "-o", str(tmp_path / "none.json")]) == 3
    assert "has no span files" in capsys.readouterr().err
    run.update(instruments={"otel": {"enabled": False}})
    assert main(["export", "otlp", str(run.path), "-o", str(tmp_path / "none.jsonl")]) == 2
    assert "recorded with --no-otel" in capsys.readouterr().err


def test_cli_export_to_stdout(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    run = make_run(tmp_path, n=4)
    assert main(["export", "jaeger", str(run.path), "-o", "-"]) == 0
    doc = json.loads(capsysbinary.readouterr().out)
    assert check_jaeger(doc) == [] and len(doc["data"]) == 4


def test_the_checker_rejects_what_the_ui_cannot_load() -> None:
    good = {"data": [{"traceID": "a" * 32, "processes": {"p1": {"serviceName": "s", "tags": []}}, "spans": [
        {"traceID": "a" * 32, "spanID": "b" * 16, "operationName": "x", "references": [], "startTime": 1795868000000000,
         "duration": 5, "tags": [{"key": "k", "type": "int64", "value": 1}], "logs": [], "processID": "p1"}]}]}
    assert check_jaeger(good) == []
    span = good["data"][0]["spans"][0]
    for field, value in (("startTime", 1795868000000000000), ("processID", "p9"), ("spanID", "B" * 16),
                         ("references", [{"refType": "PARENT", "traceID": "a" * 32, "spanID": "c" * 16}]),
                         ("tags", [{"key": "k", "type": "int64", "value": "1"}])):
        broken = json.loads(json.dumps(good))
        broken["data"][0]["spans"][0][field] = value
        assert check_jaeger(broken), field
    assert span["duration"] == 5
