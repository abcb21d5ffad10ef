"""A run's traces as OTLP/JSON lines: one ``ExportTraceServiceRequest`` per line.

The OTLP/JSON encoding of the OpenTelemetry protocol (hex trace and span ids, nanosecond times as
decimal strings, enums as numbers, lowerCamelCase keys), the same as the workers' own span files,
so each line can be POSTed as is to any OTLP/HTTP endpoint with ``Content-Type: application/json``
(``/v1/traces``), fed to the OpenTelemetry Collector's ``otlpjsonfile`` receiver, or opened by the
Jaeger UI's "Upload JSON" when it runs with a query service (the UI converts OTLP through it).
Unlike the span files, the export holds the whole trace of every request: the load generator's
client spans are in it, with the export's sampling and masking applied (see
:class:`asyncprof.analysis.traces.TraceSource`).
"""

from dataclasses import dataclass
from typing import IO

import orjson

from asyncprof.analysis.traces import TraceSource


@dataclass
class OtlpExport:
    """What :func:`write_otlp_lines` wrote."""

    lines: int = 0
    spans: int = 0


def write_otlp_lines(source: TraceSource, out: IO[bytes]) -> OtlpExport:
    """Write *source*'s spans to *out*, one request per (resource, scope) batch; streams."""
    result = OtlpExport()
    for resource, scope, spans in source.batches():
        request = {"resourceSpans": [{"resource": {"attributes": resource},
                                      "scopeSpans": [{"scope": scope, "spans": spans}]}]}
        out.write(orjson.dumps(request) + b"\n")
        result.lines += 1
        result.spans += len(spans)
    return result
