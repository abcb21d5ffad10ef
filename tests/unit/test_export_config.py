"""Live export settings (--otlp, OTEL_EXPORTER_OTLP_*), trace sampling, masking, the request log's new columns."""

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from asyncprof.analysis.requests import read_request_log
from asyncprof.analysis.summary import summarize
from asyncprof.collectors.loadgen import LoadPlan, remote_worker_command, sender_environment
from asyncprof.config import DEFAULT_SAMPLE_TRACES, SAMPLE_TRACES_ENV, RecordConfig
from asyncprof.errors import UsageError
from asyncprof.exporters import otlp_env
from asyncprof.exporters.otlp_env import (OtlpTarget, RedactingSpanExporter, apply_option, check_target,
                                          live_exporter, option_target, otlp_target, target_warnings)
from asyncprof.exporters.redact import environment_secrets, redact_attributes, redact_text
from asyncprof.loadgen.request_log import REQUEST_LOG_HEADER
from asyncprof.loadgen.trace_sampling import SAMPLE_ENV, keeps, sample_bound
from asyncprof.recorder import _trace_environment
from tests.unit.test_export import make_run


def test_otlp_option_sets_the_standard_variables_over_any_others() -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://elsewhere:4318/v1/traces",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "PATH": "/bin"}
    apply_option(env, option_target("http://127.0.0.1:4318/"))
    assert env == {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                   "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "PATH": "/bin"}
    env = {}
    apply_option(env, option_target("http://127.0.0.1:4318/v1/traces"))  # a full traces URL stays one
    assert env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://127.0.0.1:4318/v1/traces"
    for bad in ("127.0.0.1:4318", "ftp://x", "http://", "http://h:99999"):
        with pytest.raises(UsageError, match="--otlp takes an http"):
            option_target(bad)


def test_standard_variables_choose_endpoint_and_protocol() -> None:
    assert otlp_target({}) is None
    t = otlp_target({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert t == OtlpTarget("http://c:4318", "http/protobuf")  # the spec's default, not grpc
    t = otlp_target({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://d/x",
                     "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "GRPC"})
    assert t is not None and (t.endpoint, t.protocol, t.traces_url) == ("http://d/x", "grpc", True)
    assert target_warnings(OtlpTarget("http://c:4317"))[0].startswith("OTLP endpoint http://c:4317 (http/protobuf) "
                                                                      "is on port 4317")
    assert "4318" in target_warnings(OtlpTarget("c:4318", "grpc"))[0]
    assert target_warnings(OtlpTarget("http://c:4318")) == []


def test_grpc_without_its_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp_env, "grpc_installed", lambda: False)
    with pytest.raises(UsageError) as info:
        check_target(OtlpTarget("http://c:4317", "grpc"))
    assert "pip install opentelemetry-exporter-otlp-proto-grpc==1.45.1" in str(info.value)
    with pytest.raises(UsageError, match="http/json"):
        check_target(OtlpTarget("http://c:4318", "http/json"))
    with pytest.raises(UsageError, match="unknown OTLP protocol"):
        check_target(OtlpTarget("http://c:4318", "udp"))
    # In a worker the same is one line on stderr, and no live exporter.
    assert live_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is None


def test_recorder_refuses_an_unservable_protocol_before_starting(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    from asyncprof.recorder import record

    monkeypatch.setattr(otlp_env, "grpc_installed", lambda: False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(UsageError, match="grpc"):
        record(RecordConfig(mode="sync", out=tmp_path))
    assert not list(tmp_path.iterdir())  # nothing recorded, nothing started


def test_record_config_checks_the_new_options() -> None:
    for rate in (0, -0.5, 1.5):
        with pytest.raises(UsageError, match="--sample-traces"):
            RecordConfig(sample_traces=rate).validate()
    with pytest.raises(UsageError, match="--otlp takes"):
        RecordConfig(otlp="localhost:4318").validate()
    with pytest.raises(UsageError, match="--no-otel"):
        RecordConfig(otlp="http://127.0.0.1:4318", otel=False).validate()
    manifest = RecordConfig(otlp="http://u:pw@127.0.0.1:4318", sample_traces=0.5).validate().to_manifest()
    assert manifest["otlp"] == "http://u:***@127.0.0.1:4318" and manifest["sample_traces"] == 0.5


def test_workers_and_every_load_process_get_the_sampling() -> None:
    env: dict[str, str] = {}
    _trace_environment(env, RecordConfig(otlp="http://127.0.0.1:4318", sample_traces=0.1))
    assert env == {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                   "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    plan = LoadPlan(endpoints=[("a", "/a/", 1)], users=5, spawn_rate=5, run_time=5, sample_traces=0.1,
                    processes=2, remote_workers=1)
    assert sender_environment(plan)[SAMPLE_ENV] == "0.1"
    assert f"{SAMPLE_ENV}=0.1" in remote_worker_command(plan, "10.0.0.1", 5557)
    # Always set, so a variable in the caller's own environment never overrides the plan.
    assert sender_environment(LoadPlan(endpoints=[("a", "/a/", 1)], users=5, spawn_rate=5, run_time=5))[SAMPLE_ENV] == "1.0"


def test_the_sample_rate_defaults_to_the_variable_then_to_the_budgeted_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SAMPLE_TRACES_ENV, raising=False)
    assert RecordConfig().validate().sample_traces == DEFAULT_SAMPLE_TRACES < 1
    monkeypatch.setenv(SAMPLE_TRACES_ENV, "0.25")
    assert RecordConfig().validate().sample_traces == 0.25
    assert RecordConfig(sample_traces=1.0).validate().sample_traces == 1.0  # the option wins
    for bad in ("lots", "0", "2"):
        monkeypatch.setenv(SAMPLE_TRACES_ENV, bad)
        with pytest.raises(UsageError, match=f"ASYNCPROF_SAMPLE_TRACES.*not '{bad}'"):
            RecordConfig().validate()


def test_the_sampling_rule_is_opentelemetrys_trace_id_ratio() -> None:
    import random

    rng = random.Random(7)
    for rate in (0.01, 0.25, 0.5, 0.999, 1.0):
        sampler, bound = TraceIdRatioBased(rate), sample_bound(rate)
        for _ in range(500):
            tid = rng.getrandbits(128) or 1
            assert keeps(tid, bound) == keeps(f"{tid:032x}", bound) == (sampler.should_sample(None, tid, "x").decision.
                                                                            is_sampled())
    assert not keeps("not hex", sample_bound(1.0))


class _Client:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def get(self, path: str, name: str, headers: dict[str, str], context: dict[str, Any]) -> None:
        self.calls.append({"headers": headers, "context": context})


def test_locust_requests_carry_the_sampled_flag_and_log_the_client_span(monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncprof.loadgen import locustfile

    monkeypatch.setattr(locustfile, "_SAMPLE_BOUND", sample_bound(0.5))
    client = _Client()
    for _ in range(400):
        locustfile._get(client)
    flags = []
    for call in client.calls:
        version, trace_id, span_id, flag = call["headers"]["traceparent"].split("-")
        ctx = call["context"]
        assert (version, trace_id, span_id) == ("00", ctx["trace_id"], ctx["span_id"])
        assert (flag == "01") == ctx["sampled"] == keeps(trace_id, sample_bound(0.5))
        flags.append(ctx["sampled"])
    assert 120 < sum(flags) < 280
    # The log line ends with the client span id and the sampled flag.
    from asyncprof.loadgen import request_listener

    monkeypatch.setattr(request_listener, "_runner", object())  # "somewhere to send": the line is buffered
    monkeypatch.setattr(request_listener, "_buffer", [])
    request_listener._log_request("GET", "sync/seed", 12.0, 100, response=None,
                                  context=client.calls[0]["context"], start_time=100.0)
    fields = request_listener._buffer[0].rstrip("\n").split("\t")
    assert len(fields) == len(REQUEST_LOG_HEADER.split("\t")) == 10
    assert fields[8] == client.calls[0]["context"]["span_id"] and fields[9] == ("1" if flags[0] else "0")


def test_request_log_reads_span_ids_and_sampled_flags_of_every_generation(tmp_path: Path) -> None:
    path = tmp_path / "requests.tsv"
    path.write_text(REQUEST_LOG_HEADER
                    + "100.0\ta\t200\t1.0\t1\tt1\t\t\tc0ffee0000000001\t1\n"
                    + "100.1\ta\t200\t1.0\t1\tt2\t\t2.5\tc0ffee0000000002\t0\n"
                    + "100.2\ta\t200\t1.0\t1\tt3\t\t\n"  # before span ids
                    + "100.3\ta\t200\t1.0\t1\tt4\t\n")  # before lag
    log = read_request_log(path)
    assert log.span_id == ["c0ffee0000000001", "c0ffee0000000002", "", ""]
    assert log.sampled == [True, False, True, True] and log.lag_ms == [None, 2.5, None, None]
    assert log.window(100.05, 100.25).span_id == ["c0ffee0000000002", ""]


def test_report_match_rate_is_over_sampled_traces(tmp_path: Path) -> None:
    # Requests 2..29 are in the window; every third one is sampled (9 of them), each with a server span.
    run = make_run(tmp_path, n=30, sampled_every=3)
    otel = summarize(run)["instruments"]["otel"]
    assert otel["sampled_requests"] == 9 and otel["matched_requests"] == 9
    assert otel["match_rate"] == 1.0 and otel["match_rate_over"] == "sampled traces"
    from asyncprof.renderers.terminal import _otel_matched

    assert "9 of 9 sampled traces matched (match rate over sampled traces" in _otel_matched(otel)
    full = summarize(make_run(tmp_path / "b", n=10))["instruments"]["otel"]  # requests 2..9, #7 without a span
    assert full["match_rate_over"] == "requests" and full["matched_requests"] == 7 and full["match_rate"] == 0.875


def test_masking_of_keys_urls_dsns_and_known_secrets() -> None:
    assert redact_attributes({"http.method": "GET", "n": 3}) is None  # nothing to mask: no copy
    out = redact_attributes({"http.request.header.authorization": ["Bearer x"], "http.request.header.cookie": "a=b",
                             "db.statement": "ALTER USER app PASSWORD 'hunter22'",
                             "note": "see postgresql://app:hunter22@db/x and key K3Y-ABCDEF"},
                            secrets=("K3Y-ABCDEF",))
    assert out == {"http.request.header.authorization": "***", "http.request.header.cookie": "***",
                   "db.statement": "ALTER USER app PASSWORD '***'", "note": "see postgresql://app:***@db/x and key ***"}
    assert redact_text("host=db password=pw user=u") == "host=db password=*** user=u"
    assert redact_text("http://user@host/x") == "http://user@host/x"  # no password: unchanged
    env = {"DJANGO_SECRET_KEY": "django-insecure-xyz", "DATABASE_URL": "postgresql://u:longpass@h/db"}
    assert environment_secrets(env) == ("django-insecure-xyz", "longpass")


class _Collect:
    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_live_exporter_masks_before_sending() -> None:
    inner = _Collect()
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(inner, ("the-secret-key",))))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("GET /", attributes={"http.request.header.cookie": "sid=1",
                                                           "debug": "the-secret-key leaked", "plain": "ok"}):
        pass
    with tracer.start_as_current_span("clean", attributes={"plain": "ok"}):
        pass
    provider.shutdown()
    dirty, clean = inner.spans
    assert dict(dirty.attributes) == {"http.request.header.cookie": "***", "debug": "*** leaked", "plain": "ok"}
    assert dirty.context == dirty.context and dirty.name == "GET /" and dirty.end_time is not None
    assert dict(clean.attributes) == {"plain": "ok"}


def test_live_exporter_reads_the_standard_variables() -> None:
    exporter = live_exporter({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces",
                              "DJANGO_SECRET_KEY": "k" * 50})
    assert isinstance(exporter, RedactingSpanExporter) and exporter.secrets == ("k" * 50,)
    assert live_exporter({}) is None
    exporter.shutdown()
