"""One-request-at-a-time workers switch process-wide instruments off outside the sample."""

from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.extensions as ext
import pytest
from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asyncprof.worker import accounting, call_hooks, switches
from asyncprof.worker.record import RecordWriter, current

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
KEPT = f"00-{TRACE}-00f067aa0ba902b7-01"
DROPPED = f"00-{TRACE}-00f067aa0ba902b7-00"


@pytest.fixture(autouse=True)
def fresh_switch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(switches, "_on", True)
    monkeypatch.setattr(switches, "_setters", [])
    token = current.set(None)
    yield
    current.reset(token)


def test_setters_run_only_when_the_sample_state_changes() -> None:
    calls: list[bool] = []
    switches.register(calls.append)
    switches.register(calls.append)  # once per setter
    for in_sample in (True, False, False, False, True, True, False):
        switches.follow(in_sample)
    assert calls == [False, True, False]
    assert switches.is_on() is False
    late: list[bool] = []
    switches.register(late.append)  # registered while off: told at once
    assert late == [False]


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(psycopg2, "connect", psycopg2.connect)  # restored after the test
    Psycopg2Instrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    try:
        switches.track_psycopg2_connections(psycopg2)
        yield exporter
    finally:
        Psycopg2Instrumentor().uninstrument()


def test_connections_make_plain_cursors_while_the_switch_is_off(service_url: str,
                                                                 spans: InMemorySpanExporter) -> None:
    before = psycopg2.connect(service_url)  # opened while on
    try:
        traced = type(before.cursor())
        assert traced is not ext.cursor and issubclass(traced, ext.cursor)
        switches.follow(False)
        during = psycopg2.connect(service_url)  # opened while off
        try:
            for conn in (before, during):
                cur = conn.cursor()
                assert type(cur) is ext.cursor
                cur.execute("SELECT 1")
            assert spans.get_finished_spans() == ()
            switches.follow(True)
            for conn in (before, during):
                cur = conn.cursor()
                assert type(cur) is not ext.cursor
                cur.execute("SELECT 2")
            assert [s.attributes.get("db.statement") for s in spans.get_finished_spans()] == ["SELECT 2"] * 2
        finally:
            during.close()
    finally:
        before.close()


def test_a_cursor_class_set_by_someone_else_is_left_alone(service_url: str, spans: InMemorySpanExporter) -> None:
    class Mine(ext.cursor):
        pass

    conn = psycopg2.connect(service_url)
    try:
        conn.cursor_factory = Mine
        switches.follow(False)
        switches.follow(True)
        assert conn.cursor_factory is Mine
    finally:
        conn.close()


def test_a_wsgi_worker_keeps_psycopg2s_wait_callback_off_between_requests_outside_the_sample(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounting, "_writer", RecordWriter(tmp_path / "accounting"))
    monkeypatch.setattr(accounting, "_summary", {"loop": None, "thread_cpu_at_install_s": 0.0})
    monkeypatch.setattr(accounting, "_one_at_a_time", True)
    before = ext.get_wait_callback()
    assert call_hooks.install_psycopg2()
    try:
        timed = ext.get_wait_callback()
        seen: list[Any] = []

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            seen.append(ext.get_wait_callback())
            return [b"ok"]

        wrapped = accounting.wrap_wsgi(app)
        for header in (DROPPED, DROPPED, KEPT, DROPPED):
            body = wrapped({"PATH_INFO": "/x/", "HTTP_TRACEPARENT": header}, lambda *a: None)
            seen.append(ext.get_wait_callback())  # as the server iterates the body
            getattr(body, "close", lambda: None)()
        assert seen == [None, None, None, None, timed, timed, None, None]
    finally:
        ext.set_wait_callback(before)


def test_gated_cursors_trace_only_inside_a_recording_span(service_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """ASGI workers: no switch (requests overlap), each call asks whether it is in a sampled request."""
    from opentelemetry import trace

    from asyncprof.worker.sampling import in_traced_request, request_sampler

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=request_sampler(1.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(psycopg2, "connect", psycopg2.connect)  # restored after the test
    monkeypatch.setattr(trace, "get_current_span", trace.get_current_span)
    Psycopg2Instrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    try:
        switches.track_psycopg2_connections(psycopg2, gate=in_traced_request)
        conn = psycopg2.connect(service_url)
        try:
            cur = conn.cursor()
            assert type(cur).__name__.startswith("Gated") and isinstance(cur, ext.cursor)
            cur.execute("SELECT 1")  # no context: a request outside the sample
            cur.executemany("SELECT %s", [(1,), (2,)])
            assert exporter.get_finished_spans() == ()
            with provider.get_tracer("t").start_as_current_span("GET /", kind=trace.SpanKind.SERVER):
                cur.execute("SELECT 2")
                assert cur.fetchone() == (2,)
            names = [s.attributes.get("db.statement") or s.name for s in exporter.get_finished_spans()]
            assert names == ["SELECT 2", "GET /"]
            switches.follow(False)  # nothing registered to switch: the gate decides
            assert type(conn.cursor()).__name__.startswith("Gated")
        finally:
            conn.close()
    finally:
        Psycopg2Instrumentor().uninstrument()


def test_the_request_sampler_drops_roots_that_are_not_requests() -> None:
    from opentelemetry import trace

    from asyncprof.worker.sampling import request_sampler

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=request_sampler(1.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("SELECT", kind=trace.SpanKind.CLIENT):  # no request around it
        pass
    with tracer.start_as_current_span("GET /", kind=trace.SpanKind.SERVER):  # a request without traceparent
        with tracer.start_as_current_span("SELECT", kind=trace.SpanKind.CLIENT):
            pass
    assert [s.name for s in exporter.get_finished_spans()] == ["SELECT", "GET /"]
    none = TracerProvider(sampler=request_sampler(0.0))
    none.add_span_processor(SimpleSpanProcessor(exporter))
    with none.get_tracer("t").start_as_current_span("GET /", kind=trace.SpanKind.SERVER):
        pass
    assert len(exporter.get_finished_spans()) == 2  # ratio 0: no request root sampled
