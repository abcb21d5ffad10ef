"""A real OTLP/HTTP trace receiver for the tests: protobuf bodies decoded with ``opentelemetry-proto``.

It listens on loopback, accepts ``POST /v1/traces`` with ``Content-Type: application/x-protobuf``
(gzip or not), decodes each body as an ``ExportTraceServiceRequest`` and keeps every span with its
resource's ``service.name``, so a test can check counts and parent/child links of what really went
over the wire.  A body that does not decode is answered 400 and counted in ``bad_requests``.
"""

import gzip
import threading
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

KIND_SERVER, KIND_CLIENT = PbSpan.SPAN_KIND_SERVER, PbSpan.SPAN_KIND_CLIENT


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {x.key: _value(x.value) for x in v.kvlist_value.values}
    return getattr(v, which) if which else None


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: int
    name: str
    service: str
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int


@dataclass
class OtlpReceiver:
    """Start with :meth:`start` (or as a context manager); ``url`` is the base URL for OTLP/HTTP."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    bad_requests: int = 0
    paths: set[str] = field(default_factory=set)
    content_types: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "OtlpReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                try:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                except (DecodeError, OSError, zlib.error):
                    with receiver._lock:
                        receiver.bad_requests += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver._add(request, self.path, self.headers.get("Content-Type", ""))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> "OtlpReceiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _add(self, request: ExportTraceServiceRequest, path: str, content_type: str) -> None:
        out = []
        for rs in request.resource_spans:
            service = next((_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append(ReceivedSpan(
                        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex() or None, kind=s.kind, name=s.name, service=service,
                        attributes={a.key: _value(a.value) for a in s.attributes},
                        start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                    ))
        with self._lock:
            self.spans.extend(out)
            self.requests += 1
            self.paths.add(path)
            self.content_types.add(content_type)

    def by_trace(self) -> dict[str, list[ReceivedSpan]]:
        with self._lock:
            spans = list(self.spans)
        out: dict[str, list[ReceivedSpan]] = defaultdict(list)
        for s in spans:
            out[s.trace_id].append(s)
        return out


def whole_traces(traces: dict[str, list[ReceivedSpan]], client_service: str) -> tuple[int, int]:
    """(client spans of *client_service*, those with a server child that has a database span under it)."""
    clients = complete = 0
    for spans in traces.values():
        by_id = {s.span_id: s for s in spans}
        for client in (s for s in spans if s.service == client_service and s.kind == KIND_CLIENT):
            clients += 1
            servers = {s.span_id for s in spans if s.kind == KIND_SERVER and s.parent_id == client.span_id}
            for db in (s for s in spans if s.kind == KIND_CLIENT and "db.system" in s.attributes):
                node, seen = db.parent_id, set()
                while node is not None and node not in servers and node not in seen:
                    seen.add(node)
                    node = by_id[node].parent_id if node in by_id else None
                if node in servers:
                    complete += 1
                    break
    return clients, complete
