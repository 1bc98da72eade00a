"""The Realtime page and its websocket: the page shows the fleet's voices; the socket relays
microphone audio (binary frames) and the answer's audio (binary frames after their event)
through the pipeline as the member, books the session once, and serves only the member's
own workspace, from the console's own origin."""

import json

import pytest
from channels.testing import WebsocketCommunicator

from accounts.roles import Role
from console.models import UsageRecord
from tests.gateway.test_realtime import tone
from tests.playground.conftest import session_headers

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/w/acme/playground/realtime/"


def test_the_page_offers_the_fleets_voices_and_a_tab(alice_client, upstream_fleet):
    response = alice_client.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'aria-current="page"' in html and "Realtime" in html
    assert '<option value="aria">aria</option>' in html
    assert "/ws/playground/acme/realtime/" in html and "realtime-worklet.js" in html
    assert "per started minute of audio" in html


def test_the_page_is_for_members_who_may_use_the_playground(
    member_of_acme, charlie_client, upstream_fleet
):
    from tests.conftest import signed_in

    assert signed_in(member_of_acme(Role.VIEWER)).get(PAGE).status_code == 403
    assert charlie_client.get(PAGE).status_code == 404


def _socket(headers, slug: str = "acme") -> WebsocketCommunicator:
    from config.asgi import application

    return WebsocketCommunicator(
        application,
        f"/ws/playground/{slug}/realtime/?model=mira",
        headers=headers,
        subprotocols=["mira-realtime.v1"],
    )


async def _events_until(ws, kind: str) -> tuple[list[dict], int]:
    """Events up to the first of `kind`, and the bytes of audio that came meanwhile."""
    events, audio = [], 0
    while True:
        frame = await ws.receive_from(timeout=15)
        if isinstance(frame, bytes):
            audio += len(frame)
            continue
        event = json.loads(frame)
        events.append(event)
        if event["type"] == kind:
            return events, audio


@pytest.fixture
def charlie_headers(charlie):
    return session_headers(charlie)


@pytest.fixture
def alice_elsewhere_headers(alice):
    """Alice's browser, on a page of another site that opens the socket."""
    return session_headers(alice, origin=b"https://evil.example")


async def test_a_session_relays_binary_audio_both_ways_and_is_booked_for_the_member(
    alice, alice_headers, upstream_fleet
):
    ws = _socket(alice_headers)
    connected, protocol = await ws.connect()
    assert connected and protocol == "mira-realtime.v1"
    try:
        created, _ = await _events_until(ws, "session.created")
        request_id = None
        await ws.send_to(
            text_data=json.dumps({"type": "session.update", "session": {"turn_detection": None}})
        )
        pcm = tone(0.5)
        for start in range(0, len(pcm), 1920):
            await ws.send_to(bytes_data=pcm[start : start + 1920])
        await ws.send_to(text_data=json.dumps({"type": "input_audio_buffer.commit"}))
        await ws.send_to(text_data=json.dumps({"type": "response.create"}))
        events, audio = await _events_until(ws, "response.done")
        kinds = [e["type"] for e in events]
        assert "conversation.item.input_audio_transcription.completed" in kinds
        deltas = [e for e in events if e["type"] == "response.audio.delta"]
        # The audio came as binary frames; its events say how much, without it.
        assert deltas and all("delta" not in e for e in deltas)
        assert audio == sum(e["bytes"] for e in deltas) > 0
        meter, _ = await _events_until(ws, "console.meter")
        request_id = meter[-1]["request_id"]
        assert meter[-1]["audio_in_seconds"] == 0.5 and meter[-1]["cost_text"].startswith("$")
    finally:
        await ws.disconnect()

    record = await UsageRecord.objects.aget(request_id=request_id)
    assert (record.source, record.user_id, record.api_key_id) == ("playground", alice.pk, None)
    assert record.product == "realtime" and record.units["audio_in_seconds"] == 0.5
    assert record.units["audio_out_seconds"] == round(audio / 48_000, 3)
    assert record.cost == 60_000
    assert await UsageRecord.objects.filter(request_id=request_id).acount() == 1


async def test_strangers_signed_out_browsers_and_foreign_pages_are_refused_before_accept(
    alice, charlie_headers, alice_elsewhere_headers, acme, upstream_fleet, simulator
):
    before = simulator.stats()["websocket_sessions"]
    signed_out = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    for headers, slug, code in (
        (signed_out, "acme", 4401),
        (charlie_headers, "acme", 4403),
        (alice_elsewhere_headers, "acme", None),
    ):
        ws = _socket(headers, slug)
        connected, closed_with = await ws.connect()
        assert not connected
        if code is not None:
            assert closed_with == code
        await ws.disconnect()
    assert simulator.stats()["websocket_sessions"] == before


async def test_a_session_the_balance_cannot_cover_says_why_and_closes(
    alice, alice_headers, acme, upstream_fleet
):
    from asgiref.sync import sync_to_async

    from console import ledger

    balance = await sync_to_async(ledger.balance_of)(acme)
    await sync_to_async(_spend_everything)(acme, balance)
    ws = _socket(alice_headers)
    connected, _ = await ws.connect()
    assert connected
    event = json.loads(await ws.receive_from(timeout=10))
    assert event["type"] == "error" and event["error"]["code"] == "insufficient_balance"
    closed = await ws.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4402, "reason": closed["reason"]}
    assert "balance" in closed["reason"].lower()
    await ws.disconnect()


def _spend_everything(workspace, balance: int) -> None:
    """Hold the whole balance, as another call in progress would."""
    from console import ledger

    ledger.hold(
        workspace_id=workspace.pk,
        api_key_id=None,
        key_budget=None,
        amount=balance,
        request_id="req_everything",
    )
