"""A run's traces as OTLP/JSON spans: the workers' span files plus a client span per request.

Every traced request is one trace: the load generator's *client* span (made here, after the run,
from ``requests.tsv``: its trace id, its span id, start and latency), the worker's *server* span
(the ``traceparent`` the generator sent makes the client span its parent), and under that the
database spans and any other spans the worker recorded.  The generator itself runs no tracing SDK
(see :mod:`asyncprof.loadgen.locustfile`), so tracing costs it nothing per request.

:class:`TraceSource` streams the spans of a run (runs can be large: nothing is held but one line
of a span file or of the request log at a time), with the export's choices applied: a fraction of
the traces (``--sample-traces``, by trace id), secrets masked (:mod:`asyncprof.exporters.redact`)
and, on each server span whose request was profiled, ``asyncprof.profile``: the path of its
pyinstrument session.  The renderers (Jaeger JSON, OTLP JSON lines) and the OTLP push consume
:meth:`TraceSource.batches`.

:func:`check_parentage` is the check the tests and ``asyncprof export`` apply to the result: how
many client requests have a trace whose server span is the client span's child and has a database
span under it.
"""

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from asyncprof import __version__
from asyncprof.analysis.requests import LoggedRequest, iter_request_log
from asyncprof.errors import CorruptRunError, UsageError
from asyncprof.exporters.redact import redact_otlp_attributes
from asyncprof.loadgen.trace_sampling import keeps, sample_bound
from asyncprof.run import Run

#: OTLP span kinds (the JSON encoding's enum numbers).
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
LOADGEN_SERVICE = "asyncprof-loadgen"
LOADGEN_SCOPE = {"name": "asyncprof.loadgen", "version": __version__}
PROFILE_ATTRIBUTE = "asyncprof.profile"
#: Client spans per batch (one OTLP/JSON line, one push request).
CLIENT_BATCH = 1000

Attributes = list[dict[str, Any]]
#: One unit of export: resource attributes, instrumentation scope, spans (OTLP/JSON dicts).
Batch = tuple[Attributes, dict[str, Any], list[dict[str, Any]]]


def kv(key: str, value: Any) -> dict[str, Any]:
    """An OTLP/JSON ``KeyValue``."""
    if isinstance(value, bool):
        v: dict[str, Any] = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    else:
        v = {"stringValue": str(value)}
    return {"key": key, "value": v}


def decode_value(value: Mapping[str, Any]) -> Any:
    """The Python value of an OTLP/JSON ``AnyValue``."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [decode_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return {x["key"]: decode_value(x.get("value", {})) for x in (value["kvlistValue"] or {}).get("values", [])}
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def attributes_dict(attrs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {a["key"]: decode_value(a.get("value") or {}) for a in attrs}


def derived_span_id(trace_id: str) -> str:
    """A stable client span id for a request logged before span ids were (and without a server span)."""
    return hashlib.blake2b(trace_id.encode(), digest_size=8).hexdigest()


@dataclass
class TraceSource:
    """The spans of *run* for an export: sampled by trace id at *rate*, secrets masked.

    ``skipped_lines`` counts damaged lines of each span file (and of the request log) met while
    streaming; :meth:`check` raises first for what makes an export pointless or wrong: no span
    files, or a span file that is not OTLP/JSON lines at all.
    """

    run: Run
    rate: float = 1.0
    secrets: tuple[str, ...] = ()
    skipped_lines: dict[str, int] = field(default_factory=dict)
    client_requests: int = 0  # requests turned into client spans
    unsampled_requests: int = 0  # requests left out: not sampled when recorded, or by this export's rate
    _bound: int = 0
    _profiles: set[str] = field(default_factory=set)
    _legacy_parents: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1:
            raise UsageError(f"--sample-traces must be above 0 and at most 1, not {self.rate:g}",
                             "e.g. --sample-traces 0.1 keeps one trace in ten")
        self._bound = sample_bound(self.rate)
        profiles = self.run.profiles_dir
        self._profiles = {p.stem for p in profiles.glob("*.pyisession")} if profiles.is_dir() else set()

    # --- checks ---------------------------------------------------------------------------

    def span_files(self) -> list[Path]:
        return sorted(self.run.spans_dir.glob("*.jsonl")) if self.run.spans_dir.is_dir() else []

    def check(self) -> None:
        """Raise a one-line error if the run has no span files, or one that is not OTLP/JSON lines."""
        files = self.span_files()
        otel = (self.run.manifest.get("instruments") or {}).get("otel") or {}
        if not files:
            if otel.get("enabled") is False:
                raise UsageError(f"run {self.run.run_id} was recorded with --no-otel: it has no spans to export",
                                 "record with OpenTelemetry on (the default)")
            raise CorruptRunError(f"run {self.run.run_id} has no span files in {self.run.spans_dir}",
                                  f"the workers wrote none; see {self.run.logs_dir / 'server.log'}")
        for path in files:
            try:
                with open(path, "rb") as f:
                    first = f.readline()
            except OSError as exc:
                raise CorruptRunError(f"cannot read span file {path}: {exc.strerror or exc}",
                                      "check the run directory's permissions") from None
            if first.strip() and _parse_request(first) is None:
                raise CorruptRunError(f"span file {path} is not OTLP/JSON lines (its first line does not parse)",
                                      "the run directory is damaged; move the file away to export the rest")

    # --- streaming ------------------------------------------------------------------------

    def keeps(self, trace_id: str) -> bool:
        return self.rate >= 1 or keeps(trace_id, self._bound)

    def worker_batches(self) -> Iterator[Batch]:
        """The workers' spans, per (resource, scope) of each line of each span file."""
        for path in self.span_files():
            with open(path, "rb") as f:
                for line in f:
                    if not line.strip():
                        continue
                    request = _parse_request(line)
                    if request is None:
                        self.skipped_lines[path.name] = self.skipped_lines.get(path.name, 0) + 1
                        continue
                    for rs in request["resourceSpans"]:
                        resource = redact_otlp_attributes(list((rs.get("resource") or {}).get("attributes") or []),
                                                          self.secrets)
                        for ss in rs.get("scopeSpans") or []:
                            spans = [self._clean(s) for s in ss.get("spans") or [] if self._wanted(s)]
                            if spans:
                                yield resource, dict(ss.get("scope") or {}), spans

    def _wanted(self, span: Any) -> bool:
        return (isinstance(span, dict) and isinstance(span.get("traceId"), str) and isinstance(span.get("spanId"), str)
                and self.keeps(span["traceId"]))

    def _clean(self, span: dict[str, Any]) -> dict[str, Any]:
        attrs = redact_otlp_attributes(list(span.get("attributes") or []), self.secrets)
        if (span.get("kind") == KIND_SERVER and span["traceId"] in self._profiles
                and not any(a.get("key") == PROFILE_ATTRIBUTE for a in attrs)):
            # Runs recorded before the worker set it: the profile is named by the trace id.
            attrs.append(kv(PROFILE_ATTRIBUTE, str((self.run.profiles_dir / f"{span['traceId']}.pyisession").resolve())))
        span["attributes"] = attrs
        return span

    def client_resource(self) -> Attributes:
        return [kv("service.name", LOADGEN_SERVICE), kv("asyncprof.role", "load-generator"),
                kv("asyncprof.run_id", self.run.run_id)]

    def client_batches(self) -> Iterator[Batch]:
        """A client span per request of ``requests.tsv`` whose trace is kept, in batches."""
        resource = self.client_resource()
        batch: list[dict[str, Any]] = []
        for span in self.client_spans():
            batch.append(span)
            if len(batch) >= CLIENT_BATCH:
                yield resource, dict(LOADGEN_SCOPE), batch
                batch = []
        if batch:
            yield resource, dict(LOADGEN_SCOPE), batch

    def batches(self) -> Iterator[Batch]:
        """Everything: the workers' spans, then the client spans."""
        yield from self.worker_batches()
        yield from self.client_batches()

    def client_spans(self) -> Iterator[dict[str, Any]]:
        manifest = self.run.manifest
        paths = endpoint_paths(manifest)
        server = manifest.get("server") or {}
        base = f"http://{server['host']}:{server['port']}" if server.get("host") and server.get("port") else None
        window = manifest.get("window") or {}
        begin, end = window.get("start_unix"), window.get("end_unix")
        for req in iter_request_log(self.run.requests_path):
            if req is None:
                self.skipped_lines["requests.tsv"] = self.skipped_lines.get("requests.tsv", 0) + 1
                continue
            if not req.trace_id:
                continue  # never sent (an open-loop request dropped in the generator): no trace
            if not req.sampled or not self.keeps(req.trace_id):
                self.unsampled_requests += 1
                continue
            span_id = req.span_id or self._legacy_parent(req.trace_id) or derived_span_id(req.trace_id)
            in_window = begin is not None and end is not None and begin <= req.start < end
            self.client_requests += 1
            yield client_span(req, span_id, paths.get(req.name), base, in_window)

    def _legacy_parent(self, trace_id: str) -> str | None:
        """For logs without span ids: the server span's parent id is the span id the client sent."""
        if self._legacy_parents is None:
            self._legacy_parents = {}
            counted = dict(self.skipped_lines)  # this extra pass must not count damaged lines twice
            for _resource, _scope, spans in self.worker_batches():
                for s in spans:
                    if s.get("kind") == KIND_SERVER and s.get("parentSpanId"):
                        self._legacy_parents.setdefault(s["traceId"], s["parentSpanId"])
            self.skipped_lines = counted
        return self._legacy_parents.get(trace_id)


def _parse_request(line: bytes) -> dict[str, Any] | None:
    """One ``ExportTraceServiceRequest`` line, or None if it is not one."""
    try:
        request = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(request, dict) or not isinstance(request.get("resourceSpans"), list):
        return None
    if not all(_is_resource_spans(rs) for rs in request["resourceSpans"]):
        return None
    return request


def _is_resource_spans(rs: Any) -> bool:
    """True if *rs* has the OTLP shape the export walks: dicts and lists where it expects them
    (absent or null parts are allowed; spans that are not objects are dropped later)."""
    if not isinstance(rs, dict):
        return False
    resource = rs.get("resource")
    if resource is not None and (not isinstance(resource, dict) or not _is_attributes(resource.get("attributes"))):
        return False
    scope_spans = rs.get("scopeSpans")
    if scope_spans is None:
        return True
    if not isinstance(scope_spans, list):
        return False
    for ss in scope_spans:
        if not isinstance(ss, dict) or not isinstance(ss.get("scope"), (dict, type(None))):
            return False
        spans = ss.get("spans")
        if spans is not None and not isinstance(spans, list):
            return False
        if not all(_is_span(span) for span in spans or () if isinstance(span, dict)):
            return False
    return True


#: Span fields the export reads, and the JSON types it can turn into Jaeger or OTLP/JSON (absent is fine).
_SPAN_FIELDS: dict[str, tuple[type, ...]] = {
    "parentSpanId": (str, type(None)), "name": (str, type(None)), "kind": (int, type(None)),
    "status": (dict, type(None)), "startTimeUnixNano": (str, int, type(None)),
    "endTimeUnixNano": (str, int, type(None)),
}
#: Deeper nested attribute values than this are damage (and would exhaust the decoder's recursion).
_MAX_VALUE_DEPTH = 32


def _is_span(span: dict[str, Any]) -> bool:
    """True if the fields of *span* the export reads have usable types (times: decimal integers)."""
    for key, types in _SPAN_FIELDS.items():
        value = span.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            return False
    for key in ("startTimeUnixNano", "endTimeUnixNano"):
        if isinstance(span.get(key), str) and not (span[key].isascii() and span[key].isdigit()):
            return False
    return _is_attributes(span.get("attributes"))


def _is_attributes(attrs: Any, depth: int = 0) -> bool:
    """True for an absent (null) or OTLP ``KeyValue`` list: objects with a string ``key`` and a
    decodable ``value`` (see :func:`_is_any_value`)."""
    return attrs is None or (isinstance(attrs, list) and all(
        isinstance(a, dict) and isinstance(a.get("key"), str)
        and (a.get("value") is None or _is_any_value(a["value"], depth)) for a in attrs))


def _is_any_value(value: Any, depth: int = 0) -> bool:
    """True if :func:`decode_value` (and the Jaeger tags) can decode *value*, an OTLP/JSON ``AnyValue``."""
    if not isinstance(value, dict) or depth > _MAX_VALUE_DEPTH:
        return False
    if "stringValue" in value:
        return isinstance(value["stringValue"], str)
    if "boolValue" in value:
        return isinstance(value["boolValue"], bool)
    if "intValue" in value:
        v = value["intValue"]
        return (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, str) and v.lstrip("-").isascii() and v.lstrip("-").isdigit() and len(v) < 40)
    if "doubleValue" in value:
        v = value["doubleValue"]
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if "arrayValue" in value or "kvlistValue" in value:
        inner = value.get("arrayValue", value.get("kvlistValue")) or {}
        items = inner.get("values", []) if isinstance(inner, dict) else None
        if not isinstance(items, list):
            return False
        if "arrayValue" in value:
            return all(_is_any_value(v, depth + 1) for v in items)
        return _is_attributes(items, depth + 1)
    if "bytesValue" in value:
        return isinstance(value["bytesValue"], str)
    return True


def endpoint_paths(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Endpoint name → URL path for the run's scenario and view (empty if unknown)."""
    from asyncprof.errors import AsyncprofError
    from asyncprof.scenarios import get_scenario

    config = manifest.get("config") or {}
    if config.get("app"):  # a project's --path endpoints are named by their paths
        from asyncprof.project import parse_paths

        if config.get("locustfile"):
            return {}
        try:
            return {name: path for name, path, _weight in parse_paths([str(p) for p in config.get("paths") or ["/"]])}
        except AsyncprofError:
            return {}
    try:
        endpoints = get_scenario(str(config.get("scenario"))).endpoints_for(str(config.get("view")))
    except AsyncprofError:
        return {}
    return {name: path for name, path, _weight in endpoints}


def client_span(req: LoggedRequest, span_id: str, path: str | None, base: str | None,
                in_window: bool) -> dict[str, Any]:
    """The load generator's span for one logged request (OTLP/JSON; kind CLIENT, no parent)."""
    start_ns = round(req.start * 1e9)
    end_ns = start_ns + max(0, round(req.latency_ms * 1e6))
    attrs = [kv("http.method", "GET"), kv("asyncprof.endpoint", req.name), kv("asyncprof.latency_ms", req.latency_ms),
             kv("asyncprof.in_window", in_window)]
    if path is not None:
        attrs.append(kv("http.target", path))
        if base is not None:
            attrs.append(kv("http.url", base + path))
    if req.status:
        attrs.append(kv("http.status_code", req.status))
        attrs.append(kv("http.response_content_length", req.nbytes))
    if req.lag_ms is not None:
        attrs.append(kv("asyncprof.schedule_lag_ms", req.lag_ms))
    failed = req.status == 0 or req.status >= 400 or bool(req.error)
    status: dict[str, Any] = {"code": 0}
    if failed:
        status = {"code": 2, "message": req.error or f"HTTP {req.status}"}
        if req.error:
            attrs.append(kv("error.message", req.error))
    return {
        "traceId": req.trace_id,
        "spanId": span_id,
        "name": f"GET {path}" if path else f"GET {req.name}",
        "kind": KIND_CLIENT,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(end_ns),
        "attributes": attrs,
        "status": status,
    }


# --- the parentage check -------------------------------------------------------------------


@dataclass
class Parentage:
    """How many client requests' traces are whole: client span → server span → a database span."""

    client_requests: int = 0
    with_server: int = 0  # a server span whose parent is the client span
    complete: int = 0  # ... and a database span under that server span
    traces: int = 0

    @property
    def rate(self) -> float | None:
        return self.complete / self.client_requests if self.client_requests else None

    def add(self, other: "Parentage") -> None:
        self.client_requests += other.client_requests
        self.with_server += other.with_server
        self.complete += other.complete
        self.traces += other.traces


@dataclass(frozen=True)
class SpanRef:
    """What the parentage check needs of a span."""

    span_id: str
    parent_id: str | None
    role: str  # "request" (the load generator's client span), "server", "db" or "other"


def span_role(span: Mapping[str, Any], loadgen: bool) -> str:
    kind = span.get("kind")
    if loadgen:
        return "request"
    if kind == KIND_SERVER:
        return "server"
    if kind == KIND_CLIENT:
        return "db" if any(a.get("key") == "db.system" for a in span.get("attributes") or []) else "other"
    return "other"


def check_trace(spans: Iterable[SpanRef]) -> Parentage:
    """The parentage of one trace's spans (a database span may sit anywhere under the server span)."""
    spans = list(spans)
    result = Parentage(traces=1)
    parents = {s.span_id: s.parent_id for s in spans}
    requests = [s for s in spans if s.role == "request"]
    result.client_requests = len(requests)
    for req in requests:
        servers = [s for s in spans if s.role == "server" and s.parent_id == req.span_id]
        if not servers:
            continue
        result.with_server += 1
        server_ids = {s.span_id for s in servers}
        for db in (s for s in spans if s.role == "db"):
            seen, node = set(), db.parent_id
            while node is not None and node not in seen and node not in server_ids:
                seen.add(node)
                node = parents.get(node)
            if node in server_ids:
                result.complete += 1
                break
    return result


def check_parentage(traces: Mapping[str, Iterable[SpanRef]]) -> Parentage:
    total = Parentage()
    for spans in traces.values():
        total.add(check_trace(spans))
    return total
