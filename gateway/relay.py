"""Relaying an upstream stream to the caller as Server-Sent Events, chunk by chunk.

The upstream stream is opened (its first chunk received) before the response starts,
so that a failure up to then is an ordinary HTTP error and the fleet may still fail
over. From then on each chunk is sent as soon as it arrives (chunks that arrive
together go out in one write), a comment keeps the connection alive during long waits,
an upstream failure ends the stream with an error event, and the call is finished
exactly once: at the end, on error, and when the caller goes away.
"""

import asyncio
import logging
from collections.abc import AsyncIterator

from django.conf import settings
from django.http import StreamingHttpResponse

from gateway import metrics
from gateway.errors import ApiError
from gateway.pipeline import Call
from upstream.errors import UpstreamError
from upstream.fleet import UpstreamStream
from upstream.sse import Chunk
from upstream.sse import encode as sse
from upstream.tokens import count_tokens

logger = logging.getLogger(__name__)

KEEPALIVE = b": keep-alive\n\n"
# Streams being closed in the background: the loop keeps only weak references to tasks.
_closing: set[asyncio.Task] = set()


def delta_text(data: dict) -> list[str]:
    """The text a chat chunk adds, choice by choice."""
    texts = []
    for choice in data.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if content and isinstance(content, str):
            texts.append(content)
    return texts


def count_chat_usage(call: Call, usage: dict) -> None:
    """A chat answer's tokens: a thinking model's thinking is written output, and is
    charged as output (Mira's usage counts it apart, as `thinking_tokens`)."""
    call.tokens_in = usage.get("prompt_tokens", call.tokens_in)
    call.tokens_out = usage.get("completion_tokens", 0) + (usage.get("thinking_tokens") or 0)


class Translator:
    """Turns upstream chat chunks into what the caller's protocol expects.

    This one is for OpenAI-compatible callers, and passes each chunk on as the upstream
    sent it: only a chunk that mentions usage is parsed, to record the usage (and to
    leave it out when the caller did not ask for it). Subclasses for other protocols
    read each chunk's `data`, and keep the text they send in `text`. A subclass may
    yield other things than bytes (the playground's websocket relay yields the chunks
    themselves); `Relay` passes on whatever `pack` returns.
    """

    # True once the protocol's last event has passed (the Responses API ends its streams
    # with `response.completed` and no `[DONE]`): the call is then over, even if the
    # caller leaves before the upstream's body ends.
    finished = False

    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.text: list[str] = []
        self.usage: dict | None = None
        self.passed: list[Chunk] = []

    def start(self) -> list[bytes]:
        return []

    def keepalive(self) -> list[bytes]:
        """What to send when the upstream has been quiet for the keep-alive interval."""
        return [KEEPALIVE]

    def chunk(self, chunk: Chunk) -> list[bytes]:
        if b'"usage"' in chunk.raw:
            data = chunk.data
            usage = data.get("usage")
            if usage:
                self.usage = usage
                if not self.include_usage and not data.get("choices"):
                    return []
        self.passed.append(chunk)
        return [b"data: " + chunk.raw + b"\n\n"]

    def delivered_text(self) -> str:
        """The text sent so far, for counting the tokens of a stream that ended early."""
        text = list(self.text)
        for chunk in self.passed:
            try:
                text += delta_text(chunk.data)
            except ValueError:
                continue  # not JSON: passed on as it came, but no text to count
        return "".join(text)

    def count(self, call: Call) -> None:
        """Note the stream's units on the call: its usage, or, when the stream did not
        reach its usage chunk, the tokens of the text delivered."""
        if self.usage:
            count_chat_usage(call, self.usage)
        else:
            call.tokens_out = count_tokens(self.delivered_text())

    def end(self) -> list[bytes]:
        return [b"data: [DONE]\n\n"]

    def pack(self, parts: list) -> list:
        """What to send for one batch's parts: here one piece of bytes, one write."""
        return [b"".join(parts)] if parts else []

    def error(self, error: ApiError) -> list[bytes]:
        return [sse(error.body())]


async def open_stream(
    call: Call, stream: UpstreamStream, *, keepalive: bool = True
) -> asyncio.Task | None:
    """Wait for the first chunk; on failure the call is finished and an ApiError raised.

    With `keepalive`, waits for the keep-alive interval at most: when the first chunk
    has not come by then, the opening goes on in the task returned, for the Relay,
    whose response starts and keeps the line open with comments until the chunk comes
    (proxies close a connection idle for a minute). Without, waits as long as it takes.
    """
    wait = settings.GATEWAY_KEEPALIVE_SECONDS if keepalive else None
    opening = asyncio.ensure_future(stream.__aenter__())
    try:
        await asyncio.wait((opening,), timeout=wait)
    except BaseException:
        opening.cancel()
        call.status = 499
        await call.finish()
        raise
    if not opening.done():
        return opening
    try:
        opening.result()
    except UpstreamError as exc:
        error = call.failed(exc)
        await call.finish()
        raise error from None
    except BaseException:
        call.status = 499
        await call.finish()
        raise
    _opened(call, stream)
    return None


async def relay(
    call: Call, path: str, body: dict, translator: Translator, *, keepalive: bool = True
) -> "Relay":
    """The call's upstream stream, opened (see `open_stream`), relayed through `translator`."""
    stream = call.open_stream(path, body)
    opening = await open_stream(call, stream, keepalive=keepalive)
    return Relay(call, stream, translator, opening)


def _opened(call: Call, stream: UpstreamStream) -> None:
    call.node = stream.node or ""
    call.first_byte()


class Relay:
    def __init__(
        self,
        call: Call,
        stream: UpstreamStream,
        translator: Translator,
        opening: asyncio.Task | None = None,
    ) -> None:
        self.call = call
        self.stream = stream
        self.translator = translator
        self.opening = opening  # the first chunk, still awaited (see open_stream)
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.booked = False
        metrics.OPEN_STREAMS.inc()  # until `close()`

    async def events(self) -> AsyncIterator:
        """What to send, one item per batch of upstream chunks (see UpstreamStream.batch)."""
        call, stream, translator = self.call, self.stream, self.translator
        call.status = 499  # until the stream ends, the caller may still leave
        interval = settings.GATEWAY_KEEPALIVE_SECONDS
        parts = translator.start()
        try:
            if self.opening is not None:
                while not self.opening.done():
                    for item in translator.pack(parts + translator.keepalive()):
                        yield item
                    parts = []
                    await asyncio.wait((self.opening,), timeout=interval)
                self.opening.result()
                _opened(call, stream)
            while (chunks := await stream.batch(interval)) is not None:
                if not chunks:
                    parts += translator.keepalive()
                try:
                    for chunk in chunks:
                        parts += translator.chunk(chunk)
                except ValueError:  # a chunk that is not a JSON object
                    raise stream.malformed() from None
                if stream.done or translator.finished:
                    break  # the last chunks go out with the end of the stream
                for item in translator.pack(parts):
                    yield item
                parts = []
            call.status = 200
            # Booked before the last event, so that a caller that has read it finds the
            # call booked. The upstream connection is closed once that event is sent.
            await self._book()
            parts += translator.end()
        except UpstreamError as exc:
            error = call.failed(exc)
            logger.warning("upstream failed mid-stream for %s: %s", call.request_id, exc)
            await self.close()
            parts += translator.error(error)
        except BaseException:  # the caller left, or the task was cancelled
            await self.close()
            raise
        for item in translator.pack(parts):
            yield item

    async def _book(self) -> None:
        if self.booked:
            return
        self.booked = True
        self.translator.count(self.call)
        await self.call.finish()

    async def close(self) -> None:
        """Close the upstream stream and book the call (once)."""
        if self.closed:
            return
        self.closed = True
        metrics.OPEN_STREAMS.dec()
        if self.opening is not None and not self.opening.done():
            self.opening.cancel()
            await asyncio.wait((self.opening,))
        try:
            await asyncio.shield(self.stream.__aexit__(None, None, None))
        except Exception:
            logger.exception("closing the upstream stream for %s", self.call.request_id)
        await self._book()

    def close_soon(self) -> None:
        """Called when the response is closed: after the stream was sent, or before it
        was iterated at all."""
        if self.closed:
            return
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:  # the usual case: no need to wake the loop from another thread
            task = self.loop.create_task(self.close())
            _closing.add(task)
            task.add_done_callback(_closing.discard)
        else:
            asyncio.run_coroutine_threadsafe(self.close(), self.loop)

    def response(self) -> StreamingHttpResponse:
        response = StreamingHttpResponse(self.events(), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        response._resource_closers.append(self.close_soon)
        return response
