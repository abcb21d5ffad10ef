"""The fanout scenario's upstream: an HTTP service that answers every GET after a fixed delay.

Run by ``asyncprof record --scenario fanout`` in a process of its own, on loopback::

    python -m asyncprof.upstream --host 127.0.0.1 --port P --delay-ms D

Each request is answered ``D`` ms after its head arrived, by a timer on the event loop: waiting
costs nothing, so thousands of requests can be outstanding at once and the delay is the same
whatever the concurrency.  The service shares the machine with the target, so it is kept
cheap: a bare :class:`asyncio.Protocol` (no framework, no HTTP library, no access log) that
parses only what an HTTP/1.1 client sends for a GET, keeps connections alive, and writes each
response (head and body) in one ``write`` so the client reads it in one go.  The body is a
small JSON object: ``{"ok": true, "delay_ms": D}``.

Not a general HTTP server: a request body is read only by ``Content-Length`` (chunked request
bodies get ``501`` and the connection closed), a request head over 64 KiB gets ``431``.
"""

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence

MAX_HEAD = 64 * 1024
DEFAULT_HOST = "127.0.0.1"


def _response(status: str, body: bytes, keep_alive: bool) -> bytes:
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return head.encode("ascii") + body


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse request heads, answer each after the delay, in order."""

    def __init__(self, delay_s: float, ok: bytes, ok_close: bytes) -> None:
        self.delay_s = delay_s
        self.ok, self.ok_close = ok, ok_close
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.skip = 0  # bytes of a request body still to discard
        self.closing = False  # no more requests on this connection: close after the last answer
        self.pending = 0  # answers scheduled but not yet written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buffer += data
        while self.buffer and not self.closing:
            if self.skip:
                dropped = min(self.skip, len(self.buffer))
                self.buffer = self.buffer[dropped:]
                self.skip -= dropped
                continue
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self._fail("431 Request Header Fields Too Large")
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            self._request(head)

    def _request(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        request_line = lines[0].split(b" ")
        if len(request_line) != 3 or not request_line[2].startswith(b"HTTP/1."):
            self._fail("400 Bad Request")
            return
        keep_alive = request_line[2] == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"connection":
                keep_alive = b"close" not in value and (keep_alive or b"keep-alive" in value)
            elif name == b"content-length":
                try:
                    self.skip = int(value)
                except ValueError:
                    self._fail("400 Bad Request")
                    return
            elif name == b"transfer-encoding":
                self._fail("501 Not Implemented")
                return
        if not keep_alive:
            self.closing = True
        self.pending += 1
        # Answers go out in arrival order: the same delay after each head, and the loop runs
        # timers that are due in the order of their deadlines.
        asyncio.get_running_loop().call_later(self.delay_s, self._answer, keep_alive)

    def _answer(self, keep_alive: bool) -> None:
        self.pending -= 1
        if self.transport is None:
            return
        self.transport.write(self.ok if keep_alive else self.ok_close)
        if not keep_alive:
            self.transport.close()

    def _fail(self, status: str) -> None:
        """Answer an unparseable request at once and close (after the answers already due)."""
        self.closing = True
        self.buffer = b""
        message = json.dumps({"ok": False, "error": status}).encode()
        if self.transport is None:
            return
        if self.pending:
            asyncio.get_running_loop().call_later(self.delay_s, self._write_and_close, message, status)
        else:
            self._write_and_close(message, status)

    def _write_and_close(self, message: bytes, status: str) -> None:
        if self.transport is not None:
            self.transport.write(_response(status, message, keep_alive=False))
            self.transport.close()


async def serve(host: str, port: int, delay_ms: float, ready: "asyncio.Future[int] | None" = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve on *host*:*port* until *stop* is set (or forever); *ready* gets the bound port."""
    body = json.dumps({"ok": True, "delay_ms": delay_ms}).encode()
    ok, ok_close = _response("200 OK", body, True), _response("200 OK", body, False)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(delay_ms / 1000.0, ok, ok_close), host, port,
                                      backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    if ready is not None and not ready.done():
        ready.set_result(bound)
    stop = stop or asyncio.Event()
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asyncprof.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0: any free one)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay before each answer, ms (default 20)")
    args = parser.parse_args(argv)
    if not (0 <= args.delay_ms <= 10_000):
        parser.error(f"--delay-ms must be between 0 and 10000, not {args.delay_ms:g}")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ready: asyncio.Future[int] = loop.create_future()
        task = asyncio.create_task(serve(args.host, args.port, args.delay_ms, ready, stop))
        done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            print(f"asyncprof upstream listening on {args.host}:{ready.result()}, answering after {args.delay_ms:g} ms",
                  flush=True)
        await task

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"asyncprof upstream: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
