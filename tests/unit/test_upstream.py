"""The fanout scenario's upstream service, as a real process: delay, concurrency, HTTP framing, start and stop."""

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from asyncprof.collectors.upstream import start_upstream, upstream_command
from asyncprof.errors import UpstreamError
from asyncprof.processes import ProcessGroup
from asyncprof.run import Run
from tests.unit.upstream_process import running_upstream


async def _get(url: str, requests: int = 1, head: str = "HTTP/1.1") -> list[tuple[bytes, float]]:
    """*requests* GETs one after another on one connection: (response, seconds) each."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    out = []
    try:
        for i in range(requests):
            t0 = time.perf_counter()
            writer.write(f"GET /call/{i} {head}\r\nhost: {host}\r\n\r\n".encode())
            response_head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in response_head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            body = await reader.readexactly(length)
            out.append((response_head + body, time.perf_counter() - t0))
        if head == "HTTP/1.0":
            assert await reader.read() == b""  # the server closed the connection
    finally:
        writer.close()
    return out


def test_answers_after_the_delay_and_keeps_the_connection() -> None:
    with running_upstream(100) as url:
        answers = asyncio.run(_get(url, requests=3))
    for response, seconds in answers:
        head, body = response.split(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"connection: keep-alive" in head
        assert json.loads(body) == {"ok": True, "delay_ms": 100.0}
        assert 0.099 <= seconds <= 0.5, seconds


def test_http_1_0_gets_its_answer_and_a_close() -> None:
    with running_upstream(0) as url:
        ((response, _),) = asyncio.run(_get(url, head="HTTP/1.0"))
    assert b"connection: close" in response and response.startswith(b"HTTP/1.1 200 OK")


def test_concurrent_requests_wait_at_the_same_time() -> None:
    """50 requests on 50 connections, 200 ms each: they overlap (far less than 50 × 200 ms)."""
    async def main(url: str) -> tuple[float, list[float]]:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(_get(url) for _ in range(50)))
        return time.perf_counter() - t0, [seconds for ((_, seconds),) in results]

    with running_upstream(200) as url:
        total, each = asyncio.run(main(url))
    assert min(each) >= 0.199, min(each)
    assert total < 1.0, total  # sequential would take 10 s


def test_a_bad_request_line_is_refused() -> None:
    async def main(url: str) -> bytes:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"nonsense\r\n\r\n")
        data = await reader.read()
        writer.close()
        return data

    with running_upstream(0) as url:
        assert asyncio.run(main(url)).startswith(b"HTTP/1.1 400 Bad Request")


def test_start_upstream_waits_until_it_listens_and_the_group_stops_it(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "upstream")
    with ProcessGroup() as group:
        proc, url = start_upstream(group, run, delay_ms=10)
        assert url.startswith("http://127.0.0.1:")
        ((response, seconds),) = asyncio.run(_get(url))
        assert response.startswith(b"HTTP/1.1 200 OK") and seconds >= 0.0099
        assert "listening on 127.0.0.1" in (run.logs_dir / "upstream.log").read_text()
    assert proc.popen.returncode == 0  # SIGTERM: a clean stop
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)


def test_an_upstream_that_cannot_start_is_an_upstream_error(tmp_path: Path) -> None:
    run = Run.create(tmp_path, "upstream")
    with ProcessGroup() as group, pytest.raises(UpstreamError) as err:
        start_upstream(group, run, delay_ms=-5)  # refused by the upstream's own argument check
    assert "exited during start-up" in str(err.value) and "upstream.log" in str(err.value)
    assert err.value.exit_code == 3


def test_command_binds_what_it_is_given() -> None:
    argv = upstream_command("127.0.0.1", 8123, 20.0)
    assert argv[1:] == ["-m", "asyncprof.upstream", "--host", "127.0.0.1", "--port", "8123", "--delay-ms", "20"]
