"""Playground fixtures: a slow upstream, session headers for websockets, and a reader of frames."""

import base64
import html
import io
import re
from collections.abc import Iterator

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from PIL import Image

from tests.conftest import signed_in
from upstream.fleet import set_fleet
from upstream.simulator import SimulatorServer

ORIGIN = b"http://testserver"


def settings_for(*models: str, **shared) -> dict:
    """Playground settings with one column per model."""
    return {"columns": [{"model": m} for m in models or ("mira",)], **shared}


def session_headers(user, origin: bytes = ORIGIN) -> list[tuple[bytes, bytes]]:
    """The headers a signed-in member's browser sends when it opens the websocket."""
    return browser_of(user, origin)[1]


def browser_of(user, origin: bytes = ORIGIN) -> tuple[Client, list[tuple[bytes, bytes]]]:
    """A signed-in browser: its client (to sign out or change things with) and the headers
    it sends when it opens the websocket."""
    client = signed_in(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    headers = [
        (b"origin", origin),
        (b"host", b"testserver"),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
    ]
    return client, headers


@pytest.fixture
def alice_headers(alice) -> list[tuple[bytes, bytes]]:
    return session_headers(alice)


@pytest.fixture
def slow_upstream(start_simulator, make_fleet) -> Iterator[SimulatorServer]:
    """An upstream that waits 80 ms between chunks, installed as the fleet."""
    server = start_simulator(chunk_delay_ms=80)
    fleet = make_fleet(server, names=["slow"])
    fleet.is_simulator = True
    previous = set_fleet(fleet)
    yield server
    set_fleet(previous)


def communicator(headers, slug: str = "acme") -> WebsocketCommunicator:
    from config.asgi import application

    return WebsocketCommunicator(application, f"/ws/playground/{slug}/", headers=headers)


async def frames_until(ws: WebsocketCommunicator, kind: str, wait: float = 15) -> list[dict]:
    """Every frame up to and including the first of `kind`."""
    frames = []
    while True:
        frame = await ws.receive_json_from(timeout=wait)
        frames.append(frame)
        if frame["type"] == kind:
            return frames


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def png_data_uri(width: int = 3, height: int = 2) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 80, 200)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
