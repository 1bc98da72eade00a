"""Relaying an upstream stream to the caller as Server-Sent Events, chunk by chunk.

The upstream stream is opened (its first chunk received) before the response starts,
so that a failure up to then is an ordinary HTTP error and the fleet may still fail
over. From then on each chunk is sent as soon as it arrives, a comment keeps the
connection alive during long waits, an upstream failure ends the stream with an error
event, and the call is finished exactly once: at the end, on error, and when the
caller goes away.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from django.conf import settings
from django.http import StreamingHttpResponse

from gateway.errors import ApiError
from gateway.pipeline import Call
from upstream.errors import UpstreamError
from upstream.fleet import UpstreamStream
from upstream.tokens import count_tokens

logger = logging.getLogger(__name__)

KEEPALIVE = b": keep-alive\n\n"


def sse(data: dict | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


class Translator:
    """Turns upstream chat chunks into what the caller's protocol expects (OpenAI SSE here).

    A subclass may yield other things than bytes (the playground's websocket relay
    yields the chunks themselves); `Relay` passes on whatever the translator returns.
    """

    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.text: list[str] = []
        self.usage: dict | None = None

    def start(self) -> list[bytes]:
        return []

    def keepalive(self) -> list[bytes]:
        """What to send when the upstream has been quiet for the keep-alive interval."""
        return [KEEPALIVE]

    def chunk(self, chunk: dict) -> list[bytes]:
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
            if not self.include_usage and not chunk.get("choices"):
                return []
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                self.text.append(content)
        return [sse(chunk)]

    def end(self) -> list[bytes]:
        return [b"data: [DONE]\n\n"]

    def error(self, error: ApiError) -> list[bytes]:
        return [sse(error.body())]


async def open_stream(call: Call, stream: UpstreamStream) -> None:
    """Wait for the first chunk; on failure the call is finished and an ApiError raised."""
    try:
        await stream.__aenter__()
    except UpstreamError as exc:
        error = call.failed(exc)
        await call.finish()
        raise error from None
    except BaseException:
        call.status = 499
        await call.finish()
        raise
    call.node = stream.node or ""
    call.first_byte()


class Relay:
    def __init__(self, call: Call, stream: UpstreamStream, translator: Translator) -> None:
        self.call = call
        self.stream = stream
        self.translator = translator
        self.loop = asyncio.get_running_loop()
        self.closed = False

    async def events(self) -> AsyncIterator:
        call, translator = self.call, self.translator
        call.status = 499  # until the stream ends, the caller may still leave
        try:
            for part in translator.start():
                yield part
            async for chunk in self._with_keepalive():
                if chunk is None:
                    for part in translator.keepalive():
                        yield part
                    continue
                for part in translator.chunk(chunk):
                    yield part
            call.status = 200
            # Booked before the last event, so a caller that has read it finds the record.
            await self.close()
            for part in translator.end():
                yield part
        except UpstreamError as exc:
            error = call.failed(exc)
            logger.warning("upstream failed mid-stream for %s: %s", call.request_id, exc)
            await self.close()
            for part in translator.error(error):
                yield part
        finally:
            await self.close()

    async def _with_keepalive(self) -> AsyncIterator[dict | None]:
        """The upstream chunks, with None whenever nothing came for the keep-alive interval."""
        iterator = aiter(self.stream)
        interval = settings.GATEWAY_KEEPALIVE_SECONDS
        while True:
            next_chunk = asyncio.ensure_future(anext(iterator))
            try:
                while True:
                    done, _ = await asyncio.wait({next_chunk}, timeout=interval)
                    if done:
                        break
                    yield None
            except BaseException:
                next_chunk.cancel()
                raise
            try:
                yield next_chunk.result()
            except StopAsyncIteration:
                return

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        call, translator = self.call, self.translator
        try:
            await asyncio.shield(self.stream.__aexit__(None, None, None))
        except Exception:
            logger.exception("closing the upstream stream for %s", call.request_id)
        if translator.usage:
            call.tokens_in = translator.usage.get("prompt_tokens", call.tokens_in)
            call.tokens_out = translator.usage.get("completion_tokens", 0)
        else:
            # The stream did not reach its usage chunk: count what was delivered.
            call.tokens_out = count_tokens("".join(translator.text))
        await call.finish()

    def close_soon(self) -> None:
        """Called by Django when it closes the response, possibly before iterating it."""
        if not self.closed:
            asyncio.run_coroutine_threadsafe(self.close(), self.loop)

    def response(self) -> StreamingHttpResponse:
        response = StreamingHttpResponse(self.events(), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        response._resource_closers.append(self.close_soon)
        return response
