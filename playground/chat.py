"""One streamed chat call from the playground, through the same pipeline as /v1.

`ChatRun.run()` starts the call as the signed-in member (metered as source
"playground"), opens the upstream stream and hands each piece of text to a callback
as it arrives. Whatever happens (the reply ends, the upstream fails, the member
presses Stop or closes the tab and the task is cancelled) the call is finished
exactly once, and the run keeps what it knows for the page: text, status, metrics.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from gateway import chat, pipeline
from gateway.asgi import new_request_id
from gateway.errors import ApiError
from gateway.relay import Chunk, Translator, delta_text
from playground.models import Status

logger = logging.getLogger(__name__)


class ChunkTranslator(Translator):
    """Hands the upstream chunks on as they are (the relay collects text and usage)."""

    def __init__(self) -> None:
        super().__init__(include_usage=True)

    def keepalive(self) -> list:
        return []

    def chunk(self, chunk: Chunk) -> list:
        data = chunk.data
        if data.get("usage"):
            self.usage = data["usage"]
        self.text += delta_text(data)
        return [data]

    def end(self) -> list:
        return []

    def pack(self, parts: list) -> list:
        return parts

    def error(self, error: ApiError) -> list:
        return [error]


async def _start(caller: pipeline.Caller, body: dict, **kwargs) -> pipeline.Call:
    """`chat.start`, finished even when the run is cancelled while it holds the cost."""
    starting = asyncio.ensure_future(chat.start(caller, body, **kwargs))
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            call = await starting
            # Stopped before anything went upstream: booked, but nothing to charge.
            call.status, call.tokens_in = 499, 0
            await call.finish()
        raise


class ChatRun:
    """A streamed chat completion for one column; see the module docstring."""

    def __init__(self, caller: pipeline.Caller, body: dict) -> None:
        self.caller = caller
        self.body = body
        self.request_id = new_request_id()
        self.translator = ChunkTranslator()
        self.status = Status.STREAMING
        self.error: ApiError | None = None
        self.finish_reason = ""
        self.started = time.monotonic()
        self.ttft_ms: int | None = None
        self.duration_ms: int | None = None
        self.call: pipeline.Call | None = None
        self.cost = 0

    @property
    def text(self) -> str:
        return "".join(self.translator.text)

    @property
    def chunks(self) -> int:
        return len(self.translator.text)

    async def run(self, on_text: Callable[[], Awaitable[None]]) -> None:
        """Stream the reply, calling `on_text()` after each piece of text."""
        try:
            await self._stream(on_text)
        except ApiError as exc:
            self.error, self.status = exc, Status.ERROR
        except asyncio.CancelledError:
            self.status = Status.STOPPED
            raise
        finally:
            self.duration_ms = int((time.monotonic() - self.started) * 1000)
            await self._settled()

    async def _stream(self, on_text: Callable[[], Awaitable[None]]) -> None:
        body = self.body | {"stream": True, "stream_options": {"include_usage": True}}
        self.call = call = await _start(
            self.caller, body, request_id=self.request_id, asked=body.get("max_tokens"), stream=True
        )
        # A websocket needs no keep-alive.
        relay = await chat.stream(call, body, self.translator, keepalive=False)
        events = relay.events()
        try:
            async for event in events:
                if isinstance(event, ApiError):
                    raise event
                for choice in event.get("choices") or ():
                    if choice.get("finish_reason"):
                        self.finish_reason = choice["finish_reason"]
                    if (choice.get("delta") or {}).get("content"):
                        if self.ttft_ms is None:
                            self.ttft_ms = int((time.monotonic() - self.started) * 1000)
                        await on_text()
            self.status = Status.DONE
        finally:
            await events.aclose()
            await relay.close()

    async def _settled(self) -> None:
        """Read back what the call was charged, once it is booked."""
        call = self.call
        if call is None or not call.finished:
            return
        self.cost = await call.charged()

    @property
    def tokens_in(self) -> int:
        return self.call.tokens_in if self.call else 0

    @property
    def tokens_out(self) -> int:
        return self.call.tokens_out if self.call else 0
