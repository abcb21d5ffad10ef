"""Getting a run's traces out: OTLP endpoints (live and after the fact), secrets kept in.

* :mod:`asyncprof.exporters.otlp_env` — which OTLP endpoint and protocol, from ``--otlp`` or the
  standard ``OTEL_EXPORTER_OTLP_*`` variables, and the SDK exporter for them;
* :mod:`asyncprof.exporters.redact` — what never leaves in an exported span (passwords in URLs and
  DSNs, ``SECRET_KEY``, ``Authorization``/``Cookie`` headers);
* :mod:`asyncprof.exporters.push` — send spans read from a run directory to an OTLP endpoint.

The file formats (Jaeger JSON, OTLP JSON lines) are renderers: :mod:`asyncprof.renderers.jaeger_json`
and :mod:`asyncprof.renderers.otlp_json`.
"""
