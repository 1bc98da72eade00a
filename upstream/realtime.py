"""The realtime WebSocket client: one session with an upstream node's `/v1/realtime`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
)

from upstream.errors import UpstreamError
from upstream.fleet import Fleet, Timeouts, _detail_from_body, parse_retry_after
from upstream.nodes import Node

logger = logging.getLogger(__name__)

SUBPROTOCOL = "mira-realtime.v1"
KEY_SUBPROTOCOL = "openai-insecure-api-key."


class _NoDebug(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The websockets library logs handshake headers (keys included) at DEBUG; never let it."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_WS_LOGGER = _NoDebug(logging.getLogger("upstream.realtime.websocket"), {})


class RealtimeSession:
    """An open realtime session: `send(event)`, `recv()`, `async for event in session`.

    Events are dicts in the protocol of MIRA_API.md section 8. A closed or broken
    connection makes `recv()` raise UpstreamError(502); iteration simply ends when
    the node closes normally. `node` names the node; `close()` is idempotent.
    """

    def __init__(self, fleet: Fleet, node: Node, connection: ClientConnection) -> None:
        self._fleet = fleet
        self._node: Node | None = node
        self._connection = connection
        self.node = node.name
        self.subprotocol: str | None = connection.subprotocol

    async def send(self, event: Mapping[str, Any]) -> None:
        try:
            await self._connection.send(json.dumps(event, separators=(",", ":")))
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    async def recv(self, wait_seconds: float | None = None) -> dict[str, Any]:
        try:
            async with asyncio.timeout(wait_seconds):
                message = await self._connection.recv()
        except TimeoutError:
            raise UpstreamError(504, "No realtime event arrived in time.", node=self.node) from None
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        try:
            event = json.loads(message)
        except ValueError:
            raise UpstreamError(
                502, "The node sent a malformed realtime event.", node=self.node
            ) from None
        if not isinstance(event, dict):
            raise UpstreamError(502, "The node sent a malformed realtime event.", node=self.node)
        return event

    async def send_text(self, text: str) -> None:
        """Send an event as the caller wrote it (a relay need not parse it again)."""
        try:
            await self._connection.send(text)
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    async def recv_text(self) -> str | None:
        """The next event as the node sent it; None once the node closed normally."""
        try:
            message = await self._connection.recv()
        except ConnectionClosedOK:
            return None
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        return message if isinstance(message, str) else message.decode("utf-8", "replace")

    def __aiter__(self) -> RealtimeSession:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return await self.recv()
        except UpstreamError as exc:
            if exc.code == "closed":
                raise StopAsyncIteration from None
            raise

    def _closed(self, exc: ConnectionClosed) -> UpstreamError:
        received = exc.rcvd
        detail = "The realtime connection closed"
        if received is not None:
            detail += f" (code {received.code}{': ' + received.reason if received.reason else ''})"
        code = "closed" if isinstance(exc, ConnectionClosedOK) else None
        return UpstreamError(502, detail + ".", node=self.node, code=code)

    async def close(self) -> None:
        node, self._node = self._node, None
        if node is None:
            return
        try:
            await self._connection.close()
        finally:
            node.end()

    async def __aenter__(self) -> RealtimeSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _ws_url(node: Node, model: str | None) -> str:
    root = node.config.root_url
    scheme = "wss" if root.startswith("https:") else "ws"
    url = f"{scheme}:{root.split(':', 1)[1]}/v1/realtime"
    return url + ("?" + urlencode({"model": model}) if model else "")


async def connect_realtime(
    fleet: Fleet,
    *,
    model: str | None = None,
    node: str | None = None,
    auth: str = "bearer",
    timeouts: Timeouts | None = None,
) -> RealtimeSession:
    """Open a realtime session on a node, failing over like `Fleet.request`.

    `auth` is "bearer" (an Authorization header, for servers) or "subprotocol" (the
    `openai-insecure-api-key.<key>` subprotocol browsers must use).
    """
    limits = timeouts or fleet.options.timeouts
    candidates, _ = fleet._route(model, node, None)
    bare = fleet.resolve_model(model).name if model else None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.total
    tried: set[str] = set()
    last: UpstreamError | None = None
    for attempt in range(1, fleet.options.max_attempts + 1):
        chosen = fleet._pick(candidates, tried)
        if attempt > 1:
            assert last is not None
            if not await fleet._wait_before_retry(attempt, chosen, deadline, last):
                break
        tried.add(chosen.name)
        try:
            return await _open(fleet, chosen, bare, auth, limits)
        except UpstreamError as exc:
            last = exc
            if not exc.retryable:
                raise
    assert last is not None
    raise last


async def _open(
    fleet: Fleet, node: Node, model: str | None, auth: str, limits: Timeouts
) -> RealtimeSession:
    key = node.config.api_key
    protocols = [SUBPROTOCOL]
    headers: dict[str, str] = {}
    if auth == "subprotocol":
        protocols.append(KEY_SUBPROTOCOL + key)
    else:
        headers["Authorization"] = f"Bearer {key}"
    host = urlsplit(node.config.root_url).hostname or ""
    node.begin()
    try:
        connection = await connect(
            _ws_url(node, model),
            subprotocols=protocols,  # type: ignore[arg-type]
            additional_headers=headers,
            open_timeout=limits.connect + limits.first_byte,
            max_size=16 * 1024 * 1024,
            compression=None,
            logger=_WS_LOGGER,
            proxy=None if host in ("127.0.0.1", "localhost", "::1") else True,
        )
    except InvalidStatus as exc:
        node.end()
        response = exc.response
        detail, code = _detail_from_body(bytes(response.body or b""), response.reason_phrase)
        error = UpstreamError(
            response.status_code,
            detail,
            node=node.name,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            code=code,
            secrets=(key,),
        )
        raise fleet._failed(node, error) from None
    except TimeoutError:
        node.end()
        raise fleet._error(node, 504, "Timed out opening the realtime connection.") from None
    except (OSError, InvalidHandshake) as exc:
        node.end()
        kind = type(exc).__name__
        raise fleet._error(node, 502, f"The realtime connection failed ({kind}).") from None
    except BaseException:
        node.end()
        raise
    fleet._succeeded(node, None)
    return RealtimeSession(fleet, node, connection)
