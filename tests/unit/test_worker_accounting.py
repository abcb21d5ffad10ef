"""The in-worker accounting hooks, on a real event loop, real threads and the real PostgreSQL service.

Tolerances are generous (this 2-core machine is noisy) but every assertion can fail: a hook
that charged nothing, or charged the wrong category, breaks it.
"""

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncprof.worker import accounting, call_hooks, loop_hooks
from asyncprof.worker.clocks import perf_counter_ns, run_delay_ns, schedstat_available, thread_time_ns
from asyncprof.worker.record import RecordWriter, RequestRecord, current
from asyncprof.worker.record_format import COLUMNS

MS = 1_000_000


def burn(ms: float) -> None:
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass


def new_record() -> RequestRecord:
    return RequestRecord("ab" * 16, "/x/", time.time(), perf_counter_ns())


def test_row_matches_the_format() -> None:
    rec = new_record()
    rec.cpu, rec.db_wait, rec.hops, rec.queries = 3 * MS, 2 * MS, 4, 2
    rec.offcpu, rec.blocked_known = 5 * MS, 2 * MS
    rec.end_ns = rec.start_ns + 10 * MS
    fields = rec.row().split("\t")
    assert len(fields) == len(COLUMNS)
    row = dict(zip(COLUMNS, fields, strict=True))
    assert row["trace_id"] == "ab" * 16
    assert (row["wall_us"], row["cpu_us"], row["db_wait_us"], row["gil_wait_us"]) == ("10000", "3000", "2000", "3000")
    assert (row["hops"], row["queries"]) == ("4", "2")
    assert rec.attributes()["asyncprof.cpu_ms"] == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "0af7651916cd43dd8448eb211c80319c"),
        (b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", "0af7651916cd43dd8448eb211c80319c"),
        ("garbage", ""),
        ("00-short-b7ad6b7169203331-01", ""),
        (None, ""),
    ],
)
def test_trace_id_from_traceparent(header: Any, expected: str) -> None:
    assert accounting._trace_id(header) == expected


def test_writer_batches_and_keeps_the_header(tmp_path: Path) -> None:
    writer = RecordWriter(tmp_path, batch=3)
    for _ in range(4):
        rec = new_record()
        rec.end_ns = rec.start_ns + MS
        writer.add(rec)
    assert len(writer.path.read_text().splitlines()) == 1 + 3  # header + one batch; one record pending
    writer.flush()
    lines = writer.path.read_text().splitlines()
    assert lines[0].split("\t") == list(COLUMNS) and len(lines) == 5


def test_run_delay_is_read() -> None:
    if not schedstat_available():
        pytest.skip("no /proc/thread-self/schedstat on this kernel")
    assert run_delay_ns() >= 0 and thread_time_ns() > 0


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    assert loop_hooks.install(loop)
    yield loop
    loop.close()


def test_steps_cpu_and_ready_wait(loop: asyncio.AbstractEventLoop) -> None:
    """20 ms of the request's own CPU is cpu; 30 ms of another task's CPU while it is ready is event_loop."""
    out: dict[str, RequestRecord] = {}

    async def request() -> None:
        rec = new_record()
        current.set(rec)
        loop_hooks.first_wait(rec)
        out["rec"] = rec
        burn(20)
        await asyncio.sleep(0)  # ready at once, but the hog below runs first
        await asyncio.sleep(0.03)  # awaited time: in no category (other)
        loop_hooks.finish_running(rec)
        rec.end_ns = perf_counter_ns()
        rec.closed = True

    async def hog() -> None:  # its first step runs right after the request's first one
        burn(30)

    async def main() -> None:
        await asyncio.gather(loop.create_task(request()), loop.create_task(hog()))

    loop.run_until_complete(main())
    rec = out["rec"]
    assert 18 * MS <= rec.cpu <= 30 * MS, rec.cpu / MS
    # at least the hog's 30 ms of CPU; more on a busy machine, where the hog is preempted too
    assert 25 * MS <= rec.event_loop + rec.run_delay <= 150 * MS, (rec.event_loop / MS, rec.run_delay / MS)
    wall = rec.end_ns - rec.start_ns
    explained = rec.cpu + rec.event_loop + rec.run_delay + rec.gil_wait()
    # the 30 ms sleep is left for "other" (which must not go negative beyond clock jitter)
    assert explained <= wall + MS and wall - explained >= 20 * MS, (wall / MS, explained / MS)


def test_sync_to_async_hops_are_counted_and_timed(loop: asyncio.AbstractEventLoop) -> None:
    from asgiref.sync import sync_to_async

    assert call_hooks.install_asgiref()

    def work() -> None:
        burn(5)

    async def request() -> RequestRecord:
        rec = new_record()
        current.set(rec)
        loop_hooks.first_wait(rec)
        for _ in range(3):
            await sync_to_async(work, thread_sensitive=False)()
        loop_hooks.finish_running(rec)
        rec.closed = True
        return rec

    before = call_hooks.HOP_SITES.get("test_sync_to_async_hops_are_counted_and_timed.<locals>.work", 0)
    rec = loop.run_until_complete(loop.create_task(request()))
    assert rec.hops == 3
    assert rec.cpu >= 14 * MS  # the hop threads' CPU is the request's
    assert rec.thread_hop >= 0
    assert call_hooks.HOP_SITES["test_sync_to_async_hops_are_counted_and_timed.<locals>.work"] == before + 3


def test_time_sleep_is_blocking() -> None:
    call_hooks.install_sleep()
    rec = new_record()
    token = current.set(rec)
    try:
        time.sleep(0.02)
    finally:
        current.reset(token)
    assert 19 * MS <= rec.blocking <= 40 * MS


@pytest.fixture
def psycopg2_hooked(service_url: str) -> Iterator[str]:
    import psycopg2.extensions

    assert call_hooks.install_psycopg2()
    yield service_url
    psycopg2.extensions.set_wait_callback(None)


def test_psycopg2_waits_are_db_wait_and_db_connect(psycopg2_hooked: str) -> None:
    import psycopg2

    rec = new_record()
    box: dict[str, Any] = {}

    def in_thread() -> None:  # a fresh thread has a fresh context, as a WSGI worker thread would
        current.set(rec)
        for _ in range(3):  # a single local connect can be answered within a few microseconds
            psycopg2.connect(psycopg2_hooked).close()
        conn = psycopg2.connect(psycopg2_hooked)
        box["connect"] = rec.db_connect
        conn.autocommit = True  # otherwise psycopg2 sends BEGIN first: a round trip of its own
        with conn.cursor() as cur:
            cur.execute("select pg_sleep(0.05)")
        conn.close()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert box["connect"] > 0 and rec.db_connect == box["connect"]
    assert 45 * MS <= rec.db_wait <= 200 * MS, rec.db_wait / MS
    assert rec.queries == 1


def test_asyncpg_query_and_pool_waits(loop: asyncio.AbstractEventLoop, service_url: str) -> None:
    import asyncpg

    assert call_hooks.install_asyncpg()

    async def main() -> tuple[RequestRecord, RequestRecord]:
        pool = await asyncpg.create_pool(service_url, min_size=1, max_size=1)
        try:
            holder = await pool.acquire()

            async def request(sql: str) -> RequestRecord:
                rec = new_record()
                current.set(rec)
                loop_hooks.first_wait(rec)
                async with pool.acquire() as conn:
                    await conn.fetchval(sql)
                loop_hooks.finish_running(rec)
                rec.closed = True
                return rec

            waiting = loop.create_task(request("select 1"))
            await asyncio.sleep(0.05)  # the pool's only connection is held: the request waits
            await pool.release(holder)
            pooled = await waiting
            slow = await loop.create_task(request("select pg_sleep(0.05)"))
            return pooled, slow
        finally:
            await pool.close()

    pooled, slow = loop.run_until_complete(main())
    assert pooled.pool_wait >= 30 * MS and pooled.db_connect >= pooled.pool_wait
    assert 45 * MS <= slow.db_wait <= 200 * MS, slow.db_wait / MS
    assert slow.queries >= 1


def test_wsgi_wrapper_writes_a_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounting, "_writer", RecordWriter(tmp_path / "accounting"))
    monkeypatch.setattr(accounting, "_summary", {"thread_cpu_at_install_s": time.thread_time()})
    monkeypatch.setattr(accounting, "_requests", 0)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        burn(5)
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = accounting.wrap_wsgi(app)
    environ = {"PATH_INFO": "/p/", "HTTP_TRACEPARENT": "00-" + "cd" * 16 + "-" + "1" * 16 + "-01"}
    body = wrapped(environ, lambda *a: None)
    assert list(body) == [b"ok"]
    body.close()  # type: ignore[attr-defined]
    accounting.close()
    lines = (tmp_path / "accounting").glob("*.tsv").__next__().read_text().splitlines()
    row = dict(zip(COLUMNS, lines[1].split("\t"), strict=True))
    assert row["trace_id"] == "cd" * 16 and row["name"] == "/p/"
    assert int(row["cpu_us"]) >= 4000 and int(row["wall_us"]) >= int(row["cpu_us"])
    assert next((tmp_path / "accounting").glob("*.json")).read_text().count('"requests": 1') == 1
