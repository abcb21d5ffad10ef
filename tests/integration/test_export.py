"""Real runs exported over the real protocol: a 10 s run's live OTLP export, and its Jaeger and OTLP files.

The receiver (``tests/otlp_receiver.py``) is an OTLP/HTTP server on loopback that decodes the
protobuf bodies with ``opentelemetry-proto``.  Done when: one trace per client request, with client
→ server → database parentage for at least 99 % of the requests, and the Jaeger JSON of the same run
passes the structure check the Jaeger UI's loader implies (``tests/jaeger_check.py``).
"""

import json
from pathlib import Path

import orjson
import pytest

from asyncprof.analysis.requests import read_request_log
from asyncprof.loadgen.trace_sampling import keeps, sample_bound
from tests.integration.helpers import asyncprof, manifest, only_run, report_json
from tests.jaeger_check import check_jaeger
from tests.otlp_receiver import KIND_SERVER, OtlpReceiver, whole_traces

pytestmark = pytest.mark.integration

LOADGEN = "asyncprof-loadgen"
RUN = ["--duration", "10", "--warmup", "2", "--users", "10", "--workers", "2", "--no-pyspy", "--profile-every", "25"]


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_ten_second_run_exports_whole_traces(traces: Path, service_url: str, mode: str) -> None:
    with OtlpReceiver() as receiver:
        proc = asyncprof("record", "--mode", mode, "--db", service_url, "--out", str(traces), *RUN,
                         "--otlp", receiver.url, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(traces)
    log = read_request_log(run / "requests.tsv")
    logged = {t: s for t, s in zip(log.trace_id, log.span_id) if t}
    assert len(logged) == len(log) > 200 and all(len(s) == 16 for s in logged.values())
    m = manifest(run)
    assert m["instruments"]["otel"]["otlp"] == f"{receiver.url} (http/protobuf)"
    assert m["instruments"]["otel"]["client_spans_exported"] == len(logged)

    # What went over the wire: one trace per client request, its client span the one logged.
    assert receiver.bad_requests == 0 and receiver.paths == {"/v1/traces"}
    by_trace = receiver.by_trace()
    clients = {s.trace_id: s for s in receiver.spans if s.service == LOADGEN}
    assert len(clients) == len([s for s in receiver.spans if s.service == LOADGEN]) == len(logged)
    assert {t: s.span_id for t, s in clients.items()} == logged
    n_clients, complete = whole_traces(by_trace, LOADGEN)
    assert n_clients == len(logged) and complete >= 0.99 * len(logged), (complete, len(logged))
    # Every span the workers wrote to the run directory went out too.
    report = report_json(run)
    assert len(receiver.spans) - len(clients) == report["instruments"]["otel"]["spans"]

    # The server span carries the request's breakdown (ms), and the profile path when profiled.
    servers = [s for s in receiver.spans if s.kind == KIND_SERVER and s.parent_id is not None]
    assert servers and all(isinstance(s.attributes.get("asyncprof.cpu_ms"), float) for s in servers)
    assert all("asyncprof.event_loop_ms" in s.attributes and "asyncprof.db_wait_ms" in s.attributes for s in servers)
    profiled = [s for s in servers if "asyncprof.profile" in s.attributes]
    assert profiled and all(Path(s.attributes["asyncprof.profile"]).is_file() for s in profiled)
    assert {Path(s.attributes["asyncprof.profile"]).stem for s in profiled} == \
        {p.stem for p in (run / "profiles").glob("*.pyisession")} & {s.trace_id for s in profiled}

    # The Jaeger JSON of the same run: the UI's fields, and the same whole traces.
    out = traces.parent / "run.json"
    proc = asyncprof("export", "jaeger", str(run), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert check_jaeger(doc) == []
    jaeger_traces = {t["traceID"]: t for t in doc["data"]}
    assert set(logged) <= set(jaeger_traces)
    assert sum(len(t["spans"]) for t in doc["data"]) == len(receiver.spans)
    assert f"of {len(logged)} client requests" in proc.stderr

    # The OTLP/JSON lines hold the same spans; pushed to a second receiver they make the same traces.
    lines = traces.parent / "run.jsonl"
    assert asyncprof("export", "otlp", str(run), "-o", str(lines)).returncode == 0
    spans_in_file = sum(len(ss["spans"]) for line in lines.read_bytes().splitlines()
                        for rs in orjson.loads(line)["resourceSpans"] for ss in rs["scopeSpans"])
    assert spans_in_file == len(receiver.spans)
    with OtlpReceiver() as second:
        assert asyncprof("export", "otlp", str(run), "--endpoint", second.url).returncode == 0
    assert len(second.spans) == len(receiver.spans)
    assert whole_traces(second.by_trace(), LOADGEN) == (n_clients, complete)


def test_sampled_run_traces_the_sampled_requests_only(traces: Path, service_url: str) -> None:
    rate = 0.25
    with OtlpReceiver() as receiver:
        proc = asyncprof("record", "--mode", "async", "--db", service_url, "--out", str(traces), "--duration", "5",
                         "--warmup", "1", "--users", "10", "--workers", "2", "--no-pyspy", "--no-pyinstrument",
                         "--sample-traces", str(rate), "--otlp", receiver.url, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(traces)
    log = read_request_log(run / "requests.tsv")
    bound = sample_bound(rate)
    assert all(kept == keeps(t, bound) for t, kept in zip(log.trace_id, log.sampled))  # the generator's rule
    sampled = {t for t, kept in zip(log.trace_id, log.sampled) if kept}
    assert abs(len(sampled) / len(log) - rate) < 0.06, len(sampled) / len(log)
    by_trace = receiver.by_trace()
    assert set(by_trace) <= sampled | {s.trace_id for s in receiver.spans if s.parent_id is None and s.service != LOADGEN}
    n_clients, complete = whole_traces(by_trace, LOADGEN)
    assert n_clients == len(sampled) and complete >= 0.99 * len(sampled)
    report = report_json(run)
    otel = report["instruments"]["otel"]
    assert otel["match_rate_over"] == "sampled traces" and otel["sample_traces"] == rate
    assert otel["match_rate"] >= 0.99
    text = " ".join(asyncprof("report", str(run)).stdout.split())  # the table wraps long lines
    assert f"{otel['matched_requests']} of {otel['sampled_requests']} sampled traces matched (match rate over " \
           f"sampled traces; --sample-traces {rate:g})" in text
