"""Realtime voice: `WSS /v1/realtime`, relayed to one upstream node, and its preflight.

A session is a model call like any other (gateway.pipeline). Before the socket is
accepted it is authenticated (a key in the `openai-insecure-api-key.<key>` subprotocol
beside `mira-realtime.v1`, as browsers must send it, or in `Authorization: Bearer` or
`x-api-key`), its origin checked (none, as a server sends, or one of the console's hosts
or GATEWAY_REALTIME_ORIGINS), authorized (the `realtime` scope, the model), limited
(requests per minute, and GATEWAY_REALTIME_SESSIONS_PER_KEY at once) and held for, and
its upstream session opened. A refused handshake answers the status and JSON an HTTP
call would get, or, where the server cannot send a response, is closed with the code
4000 + status and the detail as its reason. The key is never echoed: only
`mira-realtime.v1` is.

Then every event is relayed as it arrives, in one task per direction; when either side
closes or fails, the other is closed at once. A session is metered by its audio (PCM16
mono 24 kHz, 48,000 bytes a second, in and out) and the tokens of its `response.done`
events, and charged per started minute of audio at the `realtime_minute` price. Its
hold covers what it has used plus the worst case of the next minute (a minute of audio
each way), and is grown as the session runs (console.books.extend); when the balance or
a budget cannot cover that, the session ends with an `error` event that says so, so the
balance never goes below zero. A session also ends after GATEWAY_REALTIME_MAX_SECONDS,
or GATEWAY_REALTIME_IDLE_SECONDS without an event either way. However it ends (a close
from either side, a client that vanished, a failure), `Session.run` books it once, in
its `finally`.
"""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.request import validate_host

from console import books, db, ledger, pricing
from console.shared import counter_add, counter_add_task
from gateway import metrics, pipeline, versions
from gateway.asgi import new_request_id
from gateway.errors import ApiError
from gateway.http import UPSTREAM_ERRORS, Operation, endpoint
from gateway.pipeline import Caller
from upstream.client import realtime_connect, realtime_preflight
from upstream.errors import UpstreamError
from upstream.fleet import get_fleet
from upstream.realtime import RealtimeSession

logger = logging.getLogger(__name__)

SUBPROTOCOL = "mira-realtime.v1"
KEY_SUBPROTOCOL = "openai-insecure-api-key."
PRODUCT = "realtime"
ENDPOINT = "/v1/realtime"
SAMPLE_RATE = 24_000
BYTES_PER_SECOND = SAMPLE_RATE * 2  # PCM16 mono
BYTES_PER_MINUTE = BYTES_PER_SECOND * 60
# The most audio a minute of session can carry: a minute in and a minute out.
WORST_MINUTE = 2 * BYTES_PER_MINUTE
TICK_SECONDS = 0.25  # how often the watch looks at the clock and the hold
CLOSE_WAIT_SECONDS = 1.0  # the longest a side's close may take
NORMAL_CLOSE = 1000
PREFLIGHT_CACHE_SECONDS = 60.0


def close_code(status: int) -> int:
    """The close code of a refusal or an ending for an HTTP status: 4000 + status."""
    return 4000 + status if 400 <= status < 600 else 1011


def minutes(audio_bytes: int) -> int:
    """The started minutes of PCM16 24 kHz audio that `audio_bytes` is."""
    return -(-audio_bytes // BYTES_PER_MINUTE)


def audio_length(encoded: object) -> int:
    """The bytes a base64 string decodes to, from its length (nothing decoded)."""
    if type(encoded) is not str or not encoded:
        return 0
    return len(encoded) * 3 // 4 - encoded[-2:].count("=")


def _reason(text: str) -> str:
    """A close reason: at most 123 bytes of UTF-8."""
    raw = text.encode()
    return text if len(raw) <= 120 else raw[:117].decode(errors="ignore") + "..."


class Client(Protocol):
    """The caller's side of a session: the /v1 socket, or the playground's consumer."""

    async def receive(self) -> str | None:
        """The next event from the caller, as text; None once the caller has gone."""

    async def send(self, text: str, event: dict | None) -> None:
        """An event of the upstream's, as it sent it and parsed (None when malformed)."""

    async def close(self, code: int, reason: str) -> None:
        """Close the caller's socket, unless it is closed already."""


class Ended(Exception):
    """The console ends the session: the client gets an `error` event, then a close."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def event(self) -> dict:
        kind = {401: "authentication_error", 402: "insufficient_balance", 408: "session_expired"}
        kind = kind.get(self.status, "error")
        return {
            "type": "error",
            "event_id": f"event_console_{int(time.time() * 1000)}",
            "error": {"type": kind, "code": self.code, "message": self.message},
        }


# --- opening a session --------------------------------------------------------------------


def _concurrency_key(caller: Caller) -> str:
    return f"rt:open:{caller.limit_id}"


def _counter_ttl() -> int:
    # The count outlives the longest session, so that one that ends finds it still there.
    return int(settings.GATEWAY_REALTIME_MAX_SECONDS) + 120


async def open_session(
    caller: Caller,
    *,
    model: str,
    request_id: str,
    request: HttpRequest | None = None,
    secret: str = "",
) -> "Session":
    """Authorize, limit and hold for a session, and open it upstream; ApiError when it
    may not start (nothing is then left held or counted). With the key's `secret`, the
    session ends when the key is revoked, disabled or expires."""
    pipeline.authorize(caller, scope=PRODUCT, model=model)
    counter = _concurrency_key(caller)
    most = settings.GATEWAY_REALTIME_SESSIONS_PER_KEY
    if await counter_add(counter, 1, _counter_ttl()) > most:
        await counter_add(counter, -1, _counter_ttl())
        who = "this API key" if caller.key else "you in this workspace"
        raise ApiError(
            429,
            f"Too many realtime sessions: {most} may be open at once for {who}.",
            code="too_many_sessions",
            headers={"Retry-After": "1"},
        )
    try:
        price = await db.run(pricing.unit_cost, PRODUCT, model, "realtime_minute", 1)
        call = await pipeline.start(
            caller,
            request_id=request_id,
            product=PRODUCT,
            endpoint=ENDPOINT,
            model=model,
            stream=True,
            request=request,
            units={"realtime_minute": minutes(WORST_MINUTE)},
        )
    except BaseException:
        await counter_add(counter, -1, _counter_ttl())
        raise
    call.sent_at = time.monotonic()
    try:
        upstream = await realtime_connect(get_fleet(), model=model)
    except UpstreamError as exc:
        error = call.failed(exc)
        await _end_call(call, counter)
        raise error from None
    except BaseException:
        call.status = 499
        await _end_call(call, counter)
        raise
    call.answered_at = time.monotonic()  # connected: the session's length is not the gateway's
    call.node = upstream.node
    call.status = 200
    session = Session(call=call, upstream=upstream, counter=counter, minute_price=price)
    session.secret = secret
    metrics.REALTIME_SESSIONS.inc()  # until the session's `_close`
    return session


async def _end_call(call: pipeline.Call, counter: str) -> None:
    """Book the call and count the session as closed, whatever interrupts this."""
    counting = counter_add_task(counter, -1, _counter_ttl())
    try:
        await asyncio.shield(call.finish())
    finally:
        if counting is not None:
            await asyncio.shield(counting)


class Session:
    """One relayed session: `await session.run(client)` relays until either side ends,
    closes both, and books the call once."""

    def __init__(
        self, *, call: pipeline.Call, upstream: RealtimeSession, counter: str, minute_price: int
    ) -> None:
        self.call = call
        self.upstream = upstream
        self.counter = counter
        self.minute_price = minute_price
        self.audio_in = 0
        self.audio_out = 0
        self.started = time.monotonic()
        self.last_event = self.started
        self._extending: asyncio.Future | None = None
        self._extend_lock = asyncio.Lock()
        self.on_meter: Callable[[], Awaitable[None]] | None = None
        self.secret = ""  # the key's, to notice that it stopped working
        self._counted_closed = False

    @property
    def node(self) -> str:
        return self.call.node

    def cost(self) -> int:
        """What the session costs so far (its audio; tokens at the token prices, if any)."""
        return minutes(self.audio_in + self.audio_out) * self.minute_price

    def units(self) -> dict:
        return {
            "realtime_minute": minutes(self.audio_in + self.audio_out),
            "audio_in_seconds": round(self.audio_in / BYTES_PER_SECOND, 3),
            "audio_out_seconds": round(self.audio_out / BYTES_PER_SECOND, 3),
        }

    # --- the hold -------------------------------------------------------------------------

    async def cover(self, more: int = 0) -> None:
        """Make the hold cover the audio so far, `more` bytes about to pass and a worst-case
        minute after them; Ended (402) when the balance or a budget cannot."""
        held = self.call.held
        need = minutes(self.audio_in + self.audio_out + more + WORST_MINUTE) * self.minute_price
        if held is None or need <= held.amount:
            return
        async with self._extend_lock:
            held = self.call.held
            if held is None or need <= held.amount:
                return
            key = self.call.caller.key
            # Priced by the started minute, so the hold grows at most once a minute of audio.
            amount = need - held.amount
            future = asyncio.ensure_future(
                db.run(
                    books.extend,
                    held=held,
                    amount=amount,
                    key_budget=key.monthly_budget if key else None,
                )
            )
            # Kept even when this task is cancelled meanwhile: the call must settle what it holds.
            future.add_done_callback(self._extended)
            self._extending = future
            try:
                await asyncio.shield(future)
            except ledger.PaymentRequired as exc:
                raise Ended(402, "insufficient_balance", f"The session was ended: {exc}") from None

    def _extended(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is None:
            self.call.held = future.result()

    # --- the relay ------------------------------------------------------------------------

    async def _up(self, client: Client) -> str:
        """Caller to upstream, event by event, until the caller goes."""
        while True:
            text = await client.receive()
            if text is None:
                return "client"
            self.last_event = time.monotonic()
            if '"input_audio_buffer.append"' in text:
                try:
                    event = json.loads(text)
                except ValueError:
                    event = None
                if isinstance(event, dict) and event.get("type") == "input_audio_buffer.append":
                    size = audio_length(event.get("audio"))
                    await self.cover(size)
                    self.audio_in += size
            await self.upstream.send_text(text)

    async def _down(self, client: Client) -> str:
        """Upstream to caller, event by event, metered, until the upstream closes."""
        while True:
            text = await self.upstream.recv_text()
            if text is None:
                return "upstream"
            self.last_event = time.monotonic()
            kind = None
            try:
                event = json.loads(text)
            except ValueError:
                event = None
            if isinstance(event, dict):
                kind = event.get("type")
                if kind == "response.audio.delta":
                    size = audio_length(event.get("delta"))
                    await self.cover(size)
                    self.audio_out += size
                elif kind == "response.done":
                    self._count_tokens(event)
            else:
                event = None
            await client.send(text, event)
            if kind == "response.done" and self.on_meter is not None:
                await self.on_meter()

    def _count_tokens(self, event: dict) -> None:
        response = event.get("response")
        usage = response.get("usage") if isinstance(response, dict) else None
        if isinstance(usage, dict):
            tokens_in, tokens_out = usage.get("input_tokens"), usage.get("output_tokens")
            if type(tokens_in) is int and tokens_in > 0:
                self.call.tokens_in += tokens_in
            if type(tokens_out) is int and tokens_out > 0:
                self.call.tokens_out += tokens_out

    async def _watch(self) -> str:
        """The session's clock: its longest length, its idle timeout, and its hold renewed."""
        longest = settings.GATEWAY_REALTIME_MAX_SECONDS
        idle = settings.GATEWAY_REALTIME_IDLE_SECONDS
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            if now - self.started >= longest:
                raise Ended(
                    408,
                    "session_expired",
                    f"The session reached its longest length of {longest:g} seconds.",
                )
            if now - self.last_event >= idle:
                raise Ended(
                    408,
                    "idle_timeout",
                    f"The session was idle for {idle:g} seconds: nothing was sent either way.",
                )
            await self.cover()
            if self.secret:
                await self._check_key()

    async def _check_key(self) -> None:
        """A key revoked, disabled or expired stops its sessions too (within a second:
        a worker trusts its copy of a key for less than that)."""
        try:
            await pipeline.authenticate(_bearer(self.secret))
        except ApiError as exc:
            message = f"The session was ended: {exc.detail}"
            raise Ended(401, exc.code or "invalid_api_key", message) from None

    async def run(self, client: Client) -> None:
        """Relay until either side ends (or the console ends the session), close both
        sides, and book the call: once, whatever happened."""
        call = self.call
        call.first_byte()
        tasks = [
            asyncio.ensure_future(self._up(client)),
            asyncio.ensure_future(self._down(client)),
            asyncio.ensure_future(self._watch()),
        ]
        client_gone = False
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            first = next(task for task in tasks if task in done)
            try:
                ended_by = first.result()
            except Ended as exc:
                call.status, call.error = exc.status, exc.message
                await _quietly(client.send(json.dumps(exc.event()), exc.event()))
                await _quietly(client.close(close_code(exc.status), _reason(exc.message)))
            except UpstreamError as exc:
                error = call.failed(exc)
                event = Ended(error.status, error.code or "upstream_error", error.detail)
                await _quietly(client.send(json.dumps(event.event()), event.event()))
                await _quietly(client.close(close_code(error.status), _reason(error.detail)))
            except (OSError, RuntimeError) as exc:
                # Sending to a caller that has gone.
                logger.info("realtime session %s: the client went (%s)", call.request_id, exc)
                client_gone = True
            else:
                if ended_by == "client":
                    client_gone = True
                else:
                    await _quietly(client.close(NORMAL_CLOSE, "The upstream closed the session."))
        except Exception:
            logger.exception("realtime session %s failed", call.request_id)
            call.status, call.error = 500, "The relay failed."
            await _quietly(client.close(1011, "Internal error."))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.shield(self._close(tasks, client, client_gone))

    async def _close(self, tasks: list[asyncio.Task], client: Client, client_gone: bool) -> None:
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_WAIT_SECONDS)
        # Both sides at once: neither waits for the other's close.
        await asyncio.gather(
            _quietly(self.upstream.close()),
            _quietly(client.close(NORMAL_CLOSE, "The session ended."))
            if not client_gone
            else asyncio.sleep(0),
        )
        if self._extending is not None:
            await asyncio.wait([self._extending], timeout=10)
        self.call.units = self.units()
        if not self._counted_closed:
            self._counted_closed = True
            metrics.REALTIME_SESSIONS.dec()
        await _end_call(self.call, self.counter)


async def _quietly(action: Awaitable[None]) -> None:
    """A send or close to a caller that may have gone already."""
    try:
        async with asyncio.timeout(CLOSE_WAIT_SECONDS):
            await action
    except Exception as exc:
        logger.debug("a realtime caller had gone: %r", exc)


# --- /v1/realtime over ASGI -----------------------------------------------------------------


class _Socket:
    """The /v1 caller: an ASGI websocket."""

    def __init__(self, receive, send) -> None:
        self._receive = receive
        self._send = send
        self.closed = False

    async def receive(self) -> str | None:
        while not self.closed:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self.closed = True
                return None
            if message["type"] == "websocket.receive":
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode("utf-8", "replace")
                return text
        return None

    async def send(self, text: str, event: dict | None) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


def _headers(scope: dict) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers") or []
    }


def offered_key(scope: dict) -> str | None:
    """The key a browser put in the `openai-insecure-api-key.<key>` subprotocol."""
    for protocol in scope.get("subprotocols") or []:
        if protocol.startswith(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL) :]
    return None


def _key_request(scope: dict, headers: dict[str, str]) -> HttpRequest:
    """The handshake as the request whose key `pipeline.authenticate` reads."""
    request = HttpRequest()
    request.path = scope["path"]
    key = offered_key(scope)
    if key is not None:
        request.META["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    elif "authorization" in headers:
        request.META["HTTP_AUTHORIZATION"] = headers["authorization"]
    if "x-api-key" in headers:
        request.META["HTTP_X_API_KEY"] = headers["x-api-key"]
    for name, value in headers.items():
        if name.startswith("x-sim-"):
            request.META["HTTP_" + name.upper().replace("-", "_")] = value
    return request


def _bearer(secret: str) -> HttpRequest:
    request = HttpRequest()
    request.META["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return request


def allowed_origin(origin: str | None) -> bool:
    """A program sends no Origin; a browser's must be the console's own or one allowed."""
    if origin is None:
        return True
    extra = settings.GATEWAY_REALTIME_ORIGINS
    if "*" in extra or origin in extra:
        return True
    host = urlsplit(origin).hostname
    if not host:
        return False
    allowed = settings.ALLOWED_HOSTS or (
        ["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else []
    )
    return validate_host(host, allowed)


async def _refuse(scope: dict, send, error: ApiError, request_id: str) -> None:
    """Refuse the handshake: an HTTP answer where the server can send one, else a close."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [
            (b"content-type", b"application/json"),
            (b"x-request-id", request_id.encode()),
            *((name.encode(), value.encode()) for name, value in error.headers.items()),
        ]
        await send(
            {"type": "websocket.http.response.start", "status": error.status, "headers": headers}
        )
        await send(
            {"type": "websocket.http.response.body", "body": json.dumps(error.body()).encode()}
        )
    else:
        await send(
            {
                "type": "websocket.close",
                "code": close_code(error.status),
                "reason": _reason(error.detail),
            }
        )


async def _handshake(scope: dict, request_id: str) -> Session:
    _version, path = versions.resolve(scope["path"])
    if path.rstrip("/") != ENDPOINT:
        raise ApiError(404, f"No websocket at {scope['path']}.", code="not_found")
    headers = _headers(scope)
    if not allowed_origin(headers.get("origin")):
        raise ApiError(
            403,
            "This origin may not open realtime sessions (see GATEWAY_REALTIME_ORIGINS).",
            code="origin_not_allowed",
        )
    request = _key_request(scope, headers)
    caller = await pipeline.authenticate(request)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    model = (query.get("model") or ["mira"])[0]
    secret = pipeline._secret_from(request)
    return await open_session(
        caller, model=model, request_id=request_id, request=request, secret=secret
    )


async def websocket_app(scope: dict, receive, send) -> None:
    """`WSS /v1/realtime` (ASGI)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    request_id = new_request_id()
    try:
        session = await _handshake(scope, request_id)
    except ApiError as exc:
        await _refuse(scope, send, exc, request_id)
        return
    except Exception:
        logger.exception("realtime handshake %s failed", request_id)
        await _refuse(scope, send, ApiError(500, "Internal server error."), request_id)
        return
    offered = scope.get("subprotocols") or []
    try:
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": SUBPROTOCOL if SUBPROTOCOL in offered else None,
                "headers": [(b"x-request-id", request_id.encode())],
            }
        )
    except BaseException:
        session.call.status = 499
        await session._close([], _Socket(receive, send), True)
        raise
    await session.run(_Socket(receive, send))


# --- GET /v1/realtime/preflight -------------------------------------------------------------

_preflight_cache: dict[str, tuple[float, object, dict]] = {}


async def fleet_preflight() -> dict:
    """The fleet's realtime capabilities (cached a minute), with the console's own limits."""
    fleet = get_fleet()
    cached = _preflight_cache.get("preflight")
    if cached and cached[1] is fleet and time.monotonic() - cached[0] < PREFLIGHT_CACHE_SECONDS:
        upstream = cached[2]
    else:
        try:
            upstream = (await realtime_preflight(fleet)).json()
        except UpstreamError as exc:
            if not (cached and cached[1] is fleet):
                raise pipeline.upstream_error(exc) from None
            upstream = cached[2]
        else:
            if not isinstance(upstream, dict):
                upstream = {}
            _preflight_cache["preflight"] = (time.monotonic(), fleet, upstream)
    longest = settings.GATEWAY_REALTIME_MAX_SECONDS
    if type(upstream.get("max_session_seconds")) is int:
        longest = min(longest, upstream["max_session_seconds"])
    return {
        "object": "realtime.preflight",
        "url": ENDPOINT,
        "protocols": [SUBPROTOCOL],
        "auth": ["subprotocol", "bearer", "x-api-key"],
        "input_audio_formats": upstream.get("input_audio_formats") or ["pcm16"],
        "output_audio_formats": upstream.get("output_audio_formats") or ["pcm16"],
        "sample_rate_hz": upstream.get("sample_rate_hz") or SAMPLE_RATE,
        "channels": upstream.get("channels") or 1,
        "voices": upstream.get("voices") or [],
        "models": upstream.get("models") or [],
        "turn_detection": upstream.get("turn_detection", ["server_vad", None]),
        "max_session_seconds": longest,
        "idle_timeout_seconds": settings.GATEWAY_REALTIME_IDLE_SECONDS,
        "max_concurrent_sessions": settings.GATEWAY_REALTIME_SESSIONS_PER_KEY,
        "billing": {"unit": "realtime_minute", "metered": "started minutes of audio, in and out"},
    }


@endpoint("GET")
async def preflight(request: HttpRequest) -> HttpResponse:
    pipeline.authorize(request.caller, scope=PRODUCT)
    return JsonResponse(await fleet_preflight())


SCHEMAS = {
    "RealtimePreflight": {
        "type": "object",
        "properties": {
            "object": {"const": "realtime.preflight"},
            "url": {"type": "string"},
            "protocols": {"type": "array", "items": {"type": "string"}},
            "auth": {"type": "array", "items": {"type": "string"}},
            "input_audio_formats": {"type": "array", "items": {"type": "string"}},
            "output_audio_formats": {"type": "array", "items": {"type": "string"}},
            "sample_rate_hz": {"type": "integer"},
            "voices": {"type": "array", "items": {"type": "string"}},
            "max_session_seconds": {"type": "number"},
            "idle_timeout_seconds": {"type": "number"},
            "max_concurrent_sessions": {"type": "integer"},
        },
        "required": ["object", "url", "protocols", "auth", "sample_rate_hz", "voices"],
    },
}

OPERATIONS = [
    Operation(
        "/v1/realtime/preflight", "get",
        "The realtime session's capabilities: formats, sample rate, voices, auth, limits "
        "(the session itself is WSS /v1/realtime)",
        (401, 403, *UPSTREAM_ERRORS), "RealtimePreflight",
        view=preflight, name="realtime_preflight",
    ),
]  # fmt: skip
