"""Requests outside the sample take the short way in the workers: no record, no timed task, no span."""

import asyncio
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from asyncprof.worker import accounting, loop_hooks
from asyncprof.worker.record import UNSAMPLED, RecordWriter, current
from asyncprof.worker.sampling import sampled, unsampled_context

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
KEPT = f"00-{TRACE}-00f067aa0ba902b7-01"
DROPPED = f"00-{TRACE}-00f067aa0ba902b7-00"


@pytest.mark.parametrize(("header", "expected"), [
    (KEPT, True), (DROPPED, False), (DROPPED.encode(), False), (KEPT.encode(), True),
    (f"00-{TRACE}-00f067aa0ba902b7-03", True),  # other flags beside sampled
    (f"00-{TRACE}-00f067aa0ba902b7-02", False),
    (None, True), ("", True), ("garbage", True), (f"01-{TRACE}-00f067aa0ba902b7-00", True),  # unknown version
    (f"00-{TRACE}-00f067aa0ba902b7-zz", True), (DROPPED + "-extra", True),
])  # fmt: skip
def test_only_a_well_formed_unsampled_traceparent_leaves_the_sample(header: Any, expected: bool) -> None:
    assert sampled(header) is expected


@pytest.fixture(autouse=True)
def no_request_left() -> Iterator[None]:
    """A WSGI request leaves its record in the thread's context (the next one replaces it)."""
    token = current.set(None)
    yield
    current.reset(token)


@pytest.fixture
def accounting_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "accounting"
    monkeypatch.setattr(accounting, "_writer", RecordWriter(directory))
    monkeypatch.setattr(accounting, "_summary", {"loop": None, "thread_cpu_at_install_s": 0.0})
    monkeypatch.setattr(accounting, "_unsampled", itertools.count())  # this test's requests only
    return directory


def _rows(directory: Path) -> list[str]:
    accounting._writer.flush()  # type: ignore[union-attr]
    return (directory / next(p.name for p in directory.glob("*.tsv"))).read_text().splitlines()[1:]


def test_wsgi_requests_outside_the_sample_have_no_record(accounting_dir: Path) -> None:
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append(current.get())
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = accounting.wrap_wsgi(app)
    for header in (DROPPED, KEPT, DROPPED):
        body = wrapped({"PATH_INFO": "/x/", "HTTP_TRACEPARENT": header}, lambda *a: None)
        getattr(body, "close", lambda: None)()
    assert seen[0] is UNSAMPLED and seen[2] is UNSAMPLED and seen[1] is not UNSAMPLED
    rows = _rows(accounting_dir)
    assert len(rows) == 1 and rows[0].startswith(TRACE)


@pytest.mark.parametrize("one_at_a_time", [True, False])
def test_one_request_at_a_time_workers_skip_psycopg2s_wait_callback_outside_the_sample(
        accounting_dir: Path, monkeypatch: pytest.MonkeyPatch, one_at_a_time: bool) -> None:
    import psycopg2.extensions as ext

    from asyncprof.worker import call_hooks

    before = ext.get_wait_callback()
    monkeypatch.setattr(accounting, "_one_at_a_time", one_at_a_time)
    assert call_hooks.install_psycopg2()
    try:
        timed = ext.get_wait_callback()
        assert timed is not None
        seen: list[Any] = []

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            seen.append(ext.get_wait_callback())
            start_response("200 OK", [])
            return [b"ok"]

        wrapped = accounting.wrap_wsgi(app)
        for header in (DROPPED, KEPT):
            body = wrapped({"PATH_INFO": "/x/", "HTTP_TRACEPARENT": header}, lambda *a: None)
            getattr(body, "close", lambda: None)()
        # libpq's own waits outside the sample only where no other request can be running
        assert seen == [None if one_at_a_time else timed, timed]
        assert ext.get_wait_callback() is timed
    finally:
        ext.set_wait_callback(before)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    assert loop_hooks.install(loop)
    yield loop
    loop.close()


def _asgi_request(loop: asyncio.AbstractEventLoop, app: Any, header: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/a/", "headers": [(b"traceparent", header.encode())]}

    async def serve() -> None:  # the server's task for the request, as uvicorn makes one
        await loop.create_task(app(scope, receive, send))

    loop.run_until_complete(serve())
    return sent


def test_asgi_requests_outside_the_sample_are_not_timed(loop: asyncio.AbstractEventLoop, accounting_dir: Path) -> None:
    children: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def child() -> None:
            await asyncio.sleep(0)

        task = asyncio.get_running_loop().create_task(child())
        children.append(task.get_coro())
        await task
        for _ in range(5):
            await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = accounting.wrap_asgi(app)
    steps0 = loop_hooks.STATS.steps
    assert _asgi_request(loop, wrapped, DROPPED)[-1]["body"] == b"ok"
    unsampled_steps = loop_hooks.STATS.steps - steps0
    assert not isinstance(children[0], loop_hooks.TimedCoroutine)  # its tasks are plain
    steps0 = loop_hooks.STATS.steps
    assert _asgi_request(loop, wrapped, KEPT)[-1]["body"] == b"ok"
    sampled_steps = loop_hooks.STATS.steps - steps0
    assert isinstance(children[1], loop_hooks.TimedCoroutine)
    # Timed for the unsampled request: the server's task (2 steps, outside any request) and the
    # request task's first step, in which it became known; for the sampled one, every step.
    assert unsampled_steps == 3 < sampled_steps
    rows = _rows(accounting_dir)
    assert len(rows) == 1 and rows[0].startswith(TRACE)


@pytest.mark.parametrize("module", ["httptools_impl", "h11_impl"])
def test_uvicorns_task_for_a_request_outside_the_sample_is_plain_from_the_start(
        loop: asyncio.AbstractEventLoop, module: str) -> None:
    """uvicorn creates the request's task with the scope already on its cycle: no step of it is timed."""
    import importlib

    cycle_class = importlib.import_module(f"uvicorn.protocols.http.{module}").RequestResponseCycle
    assert loop_hooks.install(loop)  # finds uvicorn's request coroutine, its protocol module imported

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        pass

    async def background() -> None:
        pass

    for header, timed in ((DROPPED, False), (KEPT, True), ("", True)):
        cycle = object.__new__(cycle_class)
        cycle.scope = {"type": "http", "headers": [(b"host", b"x")] + ([(b"traceparent", header.encode())] * bool(header))}
        task = loop_hooks.task_factory(loop, cycle.run_asgi(app))
        assert isinstance(task.get_coro(), loop_hooks.TimedCoroutine) is timed, header
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    # Any other coroutine created outside a task is timed until its first step says otherwise.
    task = loop_hooks.task_factory(loop, background())
    assert isinstance(task.get_coro(), loop_hooks.TimedCoroutine)
    loop.run_until_complete(task)


def test_tasks_of_a_request_outside_the_sample_and_theirs_are_plain(
        loop: asyncio.AbstractEventLoop, accounting_dir: Path) -> None:
    kinds: list[bool] = []
    records: list[Any] = []

    async def grandchild() -> None:
        kinds.append(isinstance(asyncio.current_task().get_coro(), loop_hooks.TimedCoroutine))  # type: ignore[union-attr]

    async def child() -> None:
        kinds.append(isinstance(asyncio.current_task().get_coro(), loop_hooks.TimedCoroutine))  # type: ignore[union-attr]
        await asyncio.get_running_loop().create_task(grandchild())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        records.append(current.get())
        await asyncio.get_running_loop().create_task(child())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = accounting.wrap_asgi(app)
    for header in (DROPPED, KEPT):
        assert _asgi_request(loop, wrapped, header)[-1]["body"] == b"ok"
    assert kinds == [False, False, True, True]
    # No context variable marks the request outside the sample (each would cost every thread hop).
    assert records[0] is None and records[1] is not None and records[1] is not UNSAMPLED


def test_spans_inside_an_unsampled_request_are_dropped() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(1.0)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    from opentelemetry import context

    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    token = context.attach(unsampled_context(DROPPED))
    try:
        assert not is_instrumentation_enabled()  # the database instrumentors call straight through
        with tracer.start_as_current_span("SELECT") as span:
            assert not span.is_recording()
            assert format(span.get_span_context().trace_id, "032x") == TRACE
    finally:
        context.detach(token)
    with tracer.start_as_current_span("root"):  # outside: the root rule samples it
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["root"]
    assert is_instrumentation_enabled()
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.fixture(scope="module")
def finished_spans() -> InMemorySpanExporter:
    """The process's tracer provider, as a worker sets it (once per process: OTel refuses a second)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.05)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another test set the global tracer provider first"
    return exporter


@pytest.fixture
def otel_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from asyncprof.worker import hooks

    monkeypatch.setattr(hooks, "ENV", dataclasses.replace(hooks.ENV, otel=True, accounting=False))


def _query_inside() -> None:
    with trace.get_tracer("db").start_as_current_span("SELECT"):
        pass


def test_wsgi_server_spans_only_for_the_sample(finished_spans: InMemorySpanExporter, otel_only: None) -> None:
    from asyncprof.worker import hooks

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        _query_inside()
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = hooks.wrap_wsgi(app)
    finished_spans.clear()
    for flags in ("00", "01", "00", "01"):  # a sampled request after an unsampled one is a server span too
        environ = {"PATH_INFO": "/x/", "REQUEST_METHOD": "GET", "SERVER_NAME": "t", "SERVER_PORT": "80",
                   "wsgi.url_scheme": "http", "HTTP_TRACEPARENT": f"00-{TRACE}-00f067aa0ba902b7-{flags}"}
        body = wrapped(environ, lambda *a: None)
        list(body)
        getattr(body, "close", lambda: None)()
        assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached to the thread
    spans = finished_spans.get_finished_spans()
    assert sorted((s.name, s.kind.name) for s in spans) == [("GET /x/", "SERVER"), ("GET /x/", "SERVER"),
                                                              ("SELECT", "INTERNAL"), ("SELECT", "INTERNAL")]
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE}


def _serve_asgi(app: Any, flags: tuple[str, ...]) -> None:
    """One GET per item of *flags* (the traceparent's flags: 00 outside the sample, 01 in it)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    loop = asyncio.new_event_loop()
    try:
        for flag in flags:
            scope = {"type": "http", "method": "GET", "path": "/a/", "scheme": "http", "http_version": "1.1",
                     "server": ("t", 80), "headers": [(b"traceparent", f"00-{TRACE}-00f067aa0ba902b7-{flag}".encode())]}
            loop.run_until_complete(app(scope, receive, send))
    finally:
        loop.close()


def test_asgi_server_spans_only_for_the_sample(finished_spans: InMemorySpanExporter, otel_only: None) -> None:
    from asyncprof.worker import hooks

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        _query_inside()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = hooks.wrap_asgi(app)
    finished_spans.clear()
    _serve_asgi(wrapped, ("00", "01", "00"))
    spans = finished_spans.get_finished_spans()
    assert sorted(s.kind.name for s in spans) == ["INTERNAL", "SERVER"]
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE}


def test_asgi_database_span_wrappers_are_on_only_while_a_sampled_request_runs(
        finished_spans: InMemorySpanExporter, otel_only: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """What OTel's asyncpg instrumentation wraps is the driver's own between sampled requests."""
    import dataclasses

    from asyncprof.worker import hooks

    monkeypatch.setattr(hooks, "ENV", dataclasses.replace(hooks.ENV, interface="asgi"))
    monkeypatch.setattr(loop_hooks, "_SWITCHED", [])

    class Driver:
        def query(self) -> str:
            return "own"

    own = Driver.__dict__["query"]
    with hooks._switched_with_sampled_requests([Driver]):
        Driver.query = lambda self: "wrapped"  # type: ignore[method-assign]  # as the instrumentor does
    assert Driver.__dict__["query"] is own
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(Driver().query())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = hooks.wrap_asgi(app)
    _serve_asgi(wrapped, ("00", "01", "00"))
    assert seen == ["own", "wrapped", "own"]
    assert Driver.__dict__["query"] is own


def test_gated_database_methods_take_otels_way_only_in_a_sampled_request() -> None:
    """Under ASGI, OTel's asyncpg wrappers are reached through a gate (switches.gated_method)."""
    import wrapt
    from opentelemetry import trace as trace_api

    from asyncprof.worker import switches
    from asyncprof.worker.sampling import in_traced_request

    calls: list[str] = []

    class Connection:
        async def execute(self, query: str) -> str:
            return f"{query} on {type(self).__name__}"

    def otel_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        calls.append(f"traced {args[0]} with instance {type(instance).__name__}")
        return wrapped(*args, **kwargs)

    plain = Connection.__dict__["execute"]
    traced = wrapt.FunctionWrapper(plain, otel_wrapper)
    Connection.execute = switches.gated_method(plain, traced, in_traced_request)  # type: ignore[method-assign]
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(1.0)))

    async def queries() -> list[str]:
        out = [await Connection().execute("SELECT 1")]
        with provider.get_tracer("t").start_as_current_span("GET /", kind=trace_api.SpanKind.SERVER):
            out.append(await Connection().execute("SELECT 2"))
        return out

    assert asyncio.run(queries()) == ["SELECT 1 on Connection", "SELECT 2 on Connection"]
    assert calls == ["traced SELECT 2 with instance Connection"]
