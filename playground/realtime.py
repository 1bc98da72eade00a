"""The Realtime page: a spoken conversation with a model, through the console's own websocket.

The page (`page`) shows the voices, models and limits of the fleet's preflight, and the
price of a minute. Its script (static/js/realtime.js) captures the microphone in an
AudioWorklet, resampled to 24 kHz PCM16, and opens `RealtimeConsumer`, which relays
through the same pipeline as `/v1/realtime` (gateway.realtime), as the signed-in member:
no key ever reaches the browser.

The socket needs a signed-in session (else closed with 4401) and a membership of the
workspace in its URL whose role may use the playground (else 4403); its origin was
checked by `AllowedHostsOriginValidator`. A session the pipeline refuses (402, 429, an
upstream that fails) is accepted only to say why, in an `error` event, and closed.

From the page: binary frames are microphone audio (PCM16 24 kHz mono), sent upstream
as `input_audio_buffer.append`; text frames are the protocol's client events, relayed
as they are. To the page: every upstream event as it came, except audio deltas, which
come as a `response.audio.delta` event without its audio followed by the audio as a
binary frame; and `console.meter` events with the session's audio, tokens and cost so far.
A sign-out or a lost membership ends the session (playground.sockets); it is booked once.
"""

import asyncio
import base64
import json
import logging
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from accounts.access import workspace_view
from accounts.models import Membership
from console.pricing import format_money
from gateway import realtime
from gateway.asgi import new_request_id
from gateway.errors import ApiError
from gateway.pipeline import as_member
from playground import products, sockets

logger = logging.getLogger(__name__)

TEMPLATE = "playground/realtime.html"
METER_SECONDS = 1.0  # how often the page hears the session's cost while it changes


@workspace_view("playground.use")
async def page(request: HttpRequest) -> HttpResponse:
    try:
        preflight, problem = await realtime.fleet_preflight(), ""
    except ApiError as exc:
        preflight, problem = (
            {},
            f"The fleet's realtime capabilities could not be read: {exc.detail}",
        )
    price = await _minute_price()
    context = {
        "tabs": products.tabs(request, "playground_realtime"),
        "preflight": preflight,
        "voices": preflight.get("voices") or [],
        "models": preflight.get("models") or ["mira"],
        "preflight_error": problem,
        "minute_price": format_money(price, precise=True),
    }
    return await sync_to_async(render)(request, TEMPLATE, context)


async def _minute_price() -> int:
    from console import db, pricing

    return await db.run(pricing.unit_cost, realtime.PRODUCT, "", "realtime_minute", 1)


urlpatterns = [path("", page, name="playground_realtime")]


# --- the websocket ---------------------------------------------------------------------------


class _Page:
    """The page's side of a session (gateway.realtime.Client)."""

    def __init__(self, consumer: "RealtimeConsumer") -> None:
        self.consumer = consumer
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()

    async def receive(self) -> str | None:
        return await self.inbox.get()

    async def send(self, text: str, event: dict | None) -> None:
        if event is not None and event.get("type") == "response.audio.delta":
            delta = event.get("delta")
            pcm = base64.b64decode(delta) if isinstance(delta, str) else b""
            slim = {k: v for k, v in event.items() if k != "delta"} | {"bytes": len(pcm)}
            await self.consumer.send(text_data=json.dumps(slim))
            await self.consumer.send(bytes_data=pcm)
        else:
            await self.consumer.send(text_data=text)

    async def close(self, code: int, reason: str) -> None:
        await self.consumer.end(code, reason)


class RealtimeConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.session: realtime.Session | None = None
        self.relay: asyncio.Task | None = None
        self.meter: asyncio.Task | None = None
        self.page: _Page | None = None
        self.joined: list[str] = []
        self.closed = False
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=sockets.SIGNED_OUT)
            return
        slug = self.scope["url_route"]["kwargs"]["slug"]
        membership = (
            await Membership.objects.select_related("workspace")
            .filter(user=user, workspace__slug=slug)
            .afirst()
        )
        if membership is None or not membership.can("playground.use"):
            await self.close(code=sockets.NOT_ALLOWED)
            return
        workspace = membership.workspace
        for group in (
            sockets.session_group(self.scope["session"].session_key),
            sockets.member_group(user_id=user.pk, workspace_id=workspace.pk),
        ):
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        model = (query.get("model") or ["mira"])[0][:128]
        caller = as_member(workspace_id=workspace.pk, user_id=user.pk)
        try:
            self.session = await realtime.open_session(
                caller, model=model, request_id=new_request_id()
            )
        except ApiError as exc:
            # A browser cannot read why a handshake was refused: accepted to say so, closed.
            await self.accept(realtime.SUBPROTOCOL if self._offered() else None)
            event = realtime.Ended(exc.status, exc.code or "refused", exc.detail).event()
            await self.send(text_data=json.dumps(event))
            await self.end(realtime.close_code(exc.status), exc.detail)
            return
        await self.accept(realtime.SUBPROTOCOL if self._offered() else None)
        self.page = _Page(self)
        self.session.on_meter = self._send_meter
        self.relay = asyncio.ensure_future(self.session.run(self.page))
        self.meter = asyncio.ensure_future(self._meter_loop())

    def _offered(self) -> bool:
        return realtime.SUBPROTOCOL in (self.scope.get("subprotocols") or [])

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.page is None:
            return
        if bytes_data is not None:
            audio = base64.b64encode(bytes_data).decode()
            text_data = json.dumps({"type": "input_audio_buffer.append", "audio": audio})
        if text_data is not None:
            self.page.inbox.put_nowait(text_data)

    async def end(self, code: int, reason: str) -> None:
        """Close the page's socket (once)."""
        if self.closed:
            return
        if self.meter is not None:
            self.meter.cancel()
            await self._send_meter()  # what the session came to
        self.closed = True
        await self.close(code=code, reason=realtime._reason(reason))

    async def disconnect(self, code: int) -> None:
        # The page went (or was closed): the relay ends, closes upstream and books the call.
        self.closed = True
        if self.page is not None:
            self.page.inbox.put_nowait(None)
        if self.meter is not None:
            self.meter.cancel()
        if self.relay is not None:
            await asyncio.shield(self.relay)
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def playground_close(self, event: dict) -> None:
        """The session signed out or the member lost the playground: end the session."""
        if self.page is not None:
            self.page.inbox.put_nowait(None)
        if self.relay is not None:
            await asyncio.shield(self.relay)
        await self.end(event["code"], "The playground is no longer open to you.")

    # --- the session's cost, as it runs ----------------------------------------------------

    async def _meter_loop(self) -> None:
        last = None
        while True:
            await asyncio.sleep(METER_SECONDS)
            state = self._meter()
            if state != last:
                last = state
                await self._send_meter()

    def _meter(self) -> dict:
        session = self.session
        assert session is not None
        return {
            "type": "console.meter",
            "request_id": session.call.request_id,
            "audio_in_seconds": round(session.audio_in / realtime.BYTES_PER_SECOND, 2),
            "audio_out_seconds": round(session.audio_out / realtime.BYTES_PER_SECOND, 2),
            "tokens_in": session.call.tokens_in,
            "tokens_out": session.call.tokens_out,
            "cost": session.cost(),
            "cost_text": format_money(session.cost(), precise=True),
        }

    async def _send_meter(self) -> None:
        if not self.closed:
            try:
                await self.send(text_data=json.dumps(self._meter()))
            except Exception:
                logger.debug("the realtime page had gone")
