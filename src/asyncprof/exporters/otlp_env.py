"""Where spans go over OTLP: ``--otlp URL`` or the standard ``OTEL_EXPORTER_OTLP_*`` variables.

* ``asyncprof record --otlp http://127.0.0.1:4318`` sets, for the workers only,
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` to the URL and ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`` (and
  drops the ``_TRACES_`` variants, which would take precedence).  A URL ending in ``/v1/traces`` is
  taken as the full traces URL (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``).
* Without ``--otlp``, the standard variables pass through to the workers as set:
  ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, ``_PROTOCOL``, ``_HEADERS``, ``_TIMEOUT``,
  ``_COMPRESSION``, ``_CERTIFICATE``...  The OTel SDK's exporters read them.

The protocol defaults to ``http/protobuf`` when no ``_PROTOCOL`` variable says otherwise: that is
the OpenTelemetry specification's default and the exporter asyncprof depends on.  (The Python
auto-instrumentation, ``opentelemetry-instrument``, defaults to ``grpc`` instead: set
``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` to get that, which needs the
``opentelemetry-exporter-otlp-proto-grpc`` package, not installed by asyncprof.)  ``http/json`` has
no Python exporter.  An endpoint on port 4317 (OTLP/gRPC's) with ``http/protobuf``, or on 4318 with
``grpc``, is almost certainly a mistake and :func:`target_warnings` says so.
"""

import importlib.util
import logging
import os
import socket
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

from asyncprof.errors import UsageError

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
HTTP_PROTOBUF, GRPC, HTTP_JSON = "http/protobuf", "grpc", "http/json"
TRACES_PATH = "/v1/traces"
GRPC_MODULE = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"


@dataclass(frozen=True)
class OtlpTarget:
    """An OTLP endpoint and protocol.  *explicit*: the endpoint came from asyncprof's own option,
    so exporters are given it directly; otherwise they read the environment (with its headers,
    certificates and timeouts)."""

    endpoint: str
    protocol: str = HTTP_PROTOBUF
    explicit: bool = False
    traces_url: bool = False  # the endpoint is the full traces URL (a ..._TRACES_ENDPOINT)

    def describe(self) -> str:
        from asyncprof.database import redact

        return f"{redact(self.endpoint)} ({self.protocol})"


def _sdk_version() -> str:
    try:
        return metadata.version("opentelemetry-sdk")
    except metadata.PackageNotFoundError:  # pragma: no cover - a dependency of asyncprof
        return ""


def grpc_install_hint() -> str:
    version = _sdk_version()
    return f"pip install opentelemetry-exporter-otlp-proto-grpc{'==' + version if version else ''}"


def grpc_installed() -> bool:
    try:
        return importlib.util.find_spec(GRPC_MODULE) is not None
    except (ImportError, ValueError):
        return False


def check_url(url: str, flag: str = "--otlp") -> str:
    """*url* if it is an http(s) URL with a host; UsageError otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{flag} takes an http:// or https:// URL, not {url!r}",
                         f"e.g. {flag} http://127.0.0.1:4318 (OTLP/HTTP, Jaeger's port 4318)")
    return url


def otlp_target(env: Mapping[str, str] | None = None) -> OtlpTarget | None:
    """The OTLP target the standard variables in *env* (default: this process's) configure, or None."""
    env = os.environ if env is None else env
    traces = env.get(TRACES_ENDPOINT, "").strip()
    endpoint = traces or env.get(ENDPOINT, "").strip()
    if not endpoint:
        return None
    protocol = (env.get(TRACES_PROTOCOL) or env.get(PROTOCOL) or HTTP_PROTOBUF).strip().lower()
    return OtlpTarget(endpoint=endpoint, protocol=protocol, traces_url=bool(traces))


def option_target(url: str) -> OtlpTarget:
    """The target of ``--otlp URL`` (or ``export --endpoint URL``): always OTLP/HTTP with protobuf."""
    check_url(url)
    full = urlsplit(url).path.rstrip("/").endswith(TRACES_PATH)
    return OtlpTarget(endpoint=url.rstrip("/") if not full else url, protocol=HTTP_PROTOBUF, explicit=True,
                      traces_url=full)


def apply_option(env: MutableMapping[str, str], target: OtlpTarget) -> None:
    """Make the workers' environment *env* export to *target* (``--otlp``), whatever it said before."""
    for name in (ENDPOINT, TRACES_ENDPOINT, PROTOCOL, TRACES_PROTOCOL):
        env.pop(name, None)
    env[TRACES_ENDPOINT if target.traces_url else ENDPOINT] = target.endpoint
    env[PROTOCOL] = target.protocol


def check_target(target: OtlpTarget) -> None:
    """UsageError (one line, what to do) if spans cannot be exported to *target* from this installation."""
    if target.protocol == HTTP_PROTOBUF:
        return
    if target.protocol == GRPC:
        if not grpc_installed():
            raise UsageError(f"{PROTOCOL}=grpc needs the OTLP/gRPC exporter, which is not installed",
                             f"{grpc_install_hint()}, or use OTLP/HTTP: --otlp http://127.0.0.1:4318")
        return
    if target.protocol == HTTP_JSON:
        raise UsageError(f"{PROTOCOL}=http/json: the Python OpenTelemetry SDK has no OTLP/HTTP JSON exporter",
                         "use http/protobuf (the default) or grpc")
    raise UsageError(f"unknown OTLP protocol {target.protocol!r} in {PROTOCOL}", "use http/protobuf or grpc")


def target_warnings(target: OtlpTarget) -> list[str]:
    """Likely mistakes that would make every export fail: a protocol on the other protocol's port."""
    endpoint = target.endpoint if "://" in target.endpoint else f"http://{target.endpoint}"
    try:
        port = urlsplit(endpoint).port
    except ValueError:
        return []
    if target.protocol == HTTP_PROTOBUF and port == 4317:
        return [f"OTLP endpoint {target.describe()} is on port 4317, OTLP/gRPC's: OTLP/HTTP is on 4318 "
                f"(or set {PROTOCOL}=grpc)"]
    if target.protocol == GRPC and port == 4318:
        return [f"OTLP endpoint {target.describe()} is on port 4318, OTLP/HTTP's: OTLP/gRPC is on 4317"]
    return []


def probe_target(target: OtlpTarget) -> str | None:
    """The URL to probe for *target* before sending (a gRPC endpoint without a port: not probed)."""
    endpoint = target.endpoint if "://" in target.endpoint else f"http://{target.endpoint}"
    try:
        port = urlsplit(endpoint).port
    except ValueError:
        return None
    return endpoint if port is not None or target.protocol != GRPC else None


def make_exporter(target: OtlpTarget) -> Any:
    """The OTel SDK span exporter for *target* (raises UsageError if its package is missing)."""
    check_target(target)
    if target.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        if target.explicit:
            return GrpcExporter(endpoint=target.endpoint, insecure=target.endpoint.startswith("http://"))
        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    if target.explicit:
        url = target.endpoint if target.traces_url else target.endpoint.rstrip("/") + TRACES_PATH
        return OTLPSpanExporter(endpoint=url)
    return OTLPSpanExporter()


def probe(url: str | None, timeout: float = 2.0) -> str | None:
    """Why nothing answers at *url* (e.g. ``Connection refused``), or None if something accepts a connection."""
    if not url:
        return None
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout):
            return None
    except (OSError, ValueError) as exc:
        return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class RedactingSpanExporter:
    """A span exporter that masks secrets (see :mod:`asyncprof.exporters.redact`) before *inner* sends.

    Spans without anything to mask (nearly all) are passed on as they are.

    With *probe_url*, an unreachable endpoint costs nothing: until an export succeeds, each batch is
    preceded by a TCP connect to *probe_url*, and a refused (or timed-out) connect drops the batch at
    once (``dropped`` counts its spans; one line on stderr says so, once) instead of letting the
    SDK exporter retry it for its whole timeout, which would hold a worker's exit for tens of seconds.
    """

    def __init__(self, inner: Any, secrets: Sequence[str] = (), probe_url: str | None = None) -> None:
        self.inner = inner
        self.secrets = tuple(s for s in secrets if s)
        self.probe_url = probe_url
        self.dropped = 0
        self._healthy = False  # the last export succeeded: no probe needed
        self._said = False

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self.probe_url is not None and not self._healthy:
            reason = probe(self.probe_url, timeout=1.0)
            if reason is not None:
                self.dropped += len(spans)
                if not self._said:
                    self._said = True
                    print(f"asyncprof: OTLP endpoint {self.probe_url} is unreachable ({reason}): dropping span "
                          "batches until it answers (the run's spans/ files are unaffected)", file=sys.stderr,
                          flush=True)
                return SpanExportResult.FAILURE
        result = self.inner.export([self._clean(s) for s in spans])
        self._healthy = result is SpanExportResult.SUCCESS
        return result

    def _clean(self, span: Any) -> Any:
        from asyncprof.exporters.redact import redact_attributes

        attrs = redact_attributes(span.attributes, self.secrets)
        if attrs is None:
            return span
        from opentelemetry.sdk.trace import ReadableSpan

        return ReadableSpan(name=span.name, context=span.context, parent=span.parent, resource=span.resource,
                            attributes=attrs, events=span.events, links=span.links, kind=span.kind,
                            status=span.status, start_time=span.start_time, end_time=span.end_time,
                            instrumentation_scope=span.instrumentation_scope)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


def live_exporter(env: Mapping[str, str] | None = None) -> Any:
    """In a worker: the masking OTLP exporter the environment asks for, or None.

    A protocol this installation cannot serve is one line on stderr (the recorder checks before it
    starts the workers; this is for servers started by hand with the same variables).
    """
    env = os.environ if env is None else env
    target = otlp_target(env)
    if target is None:
        return None
    try:
        exporter = make_exporter(target)
    except UsageError as exc:
        print(f"asyncprof: no live OTLP export: {exc}", file=sys.stderr, flush=True)
        return None
    from asyncprof.exporters.redact import environment_secrets

    # The exporters log each failed batch; one line per failure is enough in a worker's log.
    logging.getLogger("opentelemetry.exporter").setLevel(logging.ERROR)
    return RedactingSpanExporter(exporter, environment_secrets(env), probe_url=probe_target(target))
