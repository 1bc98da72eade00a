"""A minimal HTTP/1.1 client for load generation: one keep-alive connection, one call at a time.

httpx costs a few hundred microseconds of CPU per request in the client, which on a
small machine competes with the servers being measured and blurs the numbers. This
client sends a request prepared once as bytes and parses the answer with httptools
(the C parser uvicorn uses), recording when the first body bytes and the end of the
message arrived. It handles Content-Length and chunked bodies, which is all that a
JSON answer or a Server-Sent Events stream from uvicorn needs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httptools

# A streamed answer is checked by its end, so only this many trailing bytes are kept.
_TAIL_BYTES = 64


class ConnectionClosed(Exception):
    """The server closed the connection before the answer was complete."""


def build_request(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    method: str = "POST",
) -> bytes:
    """The raw bytes of one HTTP/1.1 request with a body, ready to be sent again and again."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(slots=True)
class Answer:
    """One response: status, timings (seconds from sending) and what is needed to check it."""

    status: int
    first_body: float
    total: float
    body: bytes
    size: int


class _Protocol(asyncio.Protocol):
    """Feeds what arrives to httptools and completes the pending answer at message end."""

    def __init__(self, keep_body: bool) -> None:
        self.keep_body = keep_body
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.keep_alive = False
        self.first_body_at = 0.0
        self.parts: list[bytes] = []
        self.tail = b""
        self.size = 0
        self.status = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionClosed("the server closed the connection"))

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Read here: once the message is complete the parser has forgotten it.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if not self.first_body_at:
            self.first_body_at = time.perf_counter()
        self.size += len(body)
        if self.keep_body:
            self.parts.append(body)
        else:
            self.tail = (self.tail + body)[-_TAIL_BYTES:]

    def on_message_complete(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class Connection:
    """One keep-alive connection to a server; `request()` sends a prepared request on it.

    `keep_body` keeps the whole body (for JSON answers); otherwise only its last bytes
    are kept, which is enough to see that a stream ended with `data: [DONE]`.
    """

    def __init__(self, host: str, port: int, *, keep_body: bool) -> None:
        self.host = host
        self.port = port
        self.keep_body = keep_body
        self._protocol: _Protocol | None = None
        self.connects = 0  # how many times it connected: once, unless the server closed

    async def connect(self) -> None:
        """Open (or reopen) the connection."""
        self.close()
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            lambda: _Protocol(self.keep_body), self.host, self.port
        )
        self._protocol = protocol
        self.connects += 1

    def close(self) -> None:
        """Close the connection; a later `request()` reconnects."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    async def request(self, raw: bytes, time_limit: float) -> Answer:
        """Send `raw` and wait for the whole answer; the connection is closed on any failure."""
        if self._protocol is None or self._protocol.closed:
            await self.connect()
        protocol = self._protocol
        assert protocol is not None and protocol.transport is not None
        protocol._reset()
        waiter = asyncio.get_running_loop().create_future()
        protocol.waiter = waiter
        started = time.perf_counter()
        try:
            protocol.transport.write(raw)
            async with asyncio.timeout(time_limit):
                await waiter
        except BaseException:
            self.close()
            raise
        finally:
            protocol.waiter = None
        ended = time.perf_counter()
        if not protocol.keep_alive:
            self.close()
        first = protocol.first_body_at or ended
        body = b"".join(protocol.parts) if self.keep_body else protocol.tail
        return Answer(
            status=protocol.status,
            first_body=first - started,
            total=ended - started,
            body=body,
            size=protocol.size,
        )
