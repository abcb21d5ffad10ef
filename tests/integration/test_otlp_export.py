"""With OTEL_EXPORTER_OTLP_ENDPOINT set, spans also go out over OTLP/HTTP (to a receiver in this test)."""

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.integration.helpers import SHORT, only_run, report_json

pytestmark = pytest.mark.integration


class _Receiver(BaseHTTPRequestHandler):
    trace_ids: set[str] = set()
    spans = 0
    client_spans = 0  # the load generator's, sent by asyncprof after the run
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            for rs in request.resource_spans:
                loadgen = any(a.key == "service.name" and a.value.string_value == "asyncprof-loadgen"
                              for a in rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        if loadgen:
                            type(self).client_spans += 1
                            continue
                        type(self).spans += 1
                        type(self).trace_ids.add(span.trace_id.hex())
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_spans_reach_an_otlp_http_endpoint(traces: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}"}
        env.pop("DATABASE_URL", None)
        proc = subprocess.run([sys.executable, "-m", "asyncprof", "record", "--mode", "sync", "--out", str(traces),
                               "--no-pyspy", "--no-pyinstrument", *SHORT], capture_output=True, text=True,
                              env=env, timeout=180)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = report_json(only_run(traces))
    # Everything written to the run directory also went over the wire, and a client span per request.
    assert _Receiver.spans == report["instruments"]["otel"]["spans"] > 0
    logged = sum(1 for line in (only_run(traces) / "requests.tsv").read_text().splitlines()[1:] if line.split("\t")[5])
    assert _Receiver.client_spans == logged
    assert len(_Receiver.trace_ids) >= report["requests"]
