"""`WSS /v1/realtime` against the simulator over real sockets: sessions by subprotocol and by
header relay audio both ways, refusals happen before the socket is accepted, either side's
leaving closes the other within a second, and a session is booked once with its audio,
however it ends, never spending more than the balance."""

import asyncio
import base64
import json
import math
import time
from array import array

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from accounts.models import Membership, Workspace
from accounts.roles import Role
from console import ledger
from console.actions import create_key, revoke_key
from console.models import BillingAccount, EntryKind, LedgerEntry, UsageRecord
from gateway.realtime import BYTES_PER_SECOND, KEY_SUBPROTOCOL, SUBPROTOCOL, minutes
from tests.conftest import settle_books
from tests.upstream_fixtures import await_for, fleet_over
from upstream.fleet import set_fleet

pytestmark = pytest.mark.django_db(transaction=True)

MINUTE_PRICE = 60_000  # the default realtime_minute price


def tone(seconds: float, loud: bool = True) -> bytes:
    """PCM16 mono 24 kHz: a 440 Hz tone (or silence)."""
    count = int(24_000 * seconds)
    amplitude = 8000 if loud else 0
    return array(
        "h", (int(amplitude * math.sin(2 * math.pi * 440 * i / 24_000)) for i in range(count))
    ).tobytes()


def append(pcm: bytes) -> str:
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    )


def ws_url(asgi_server, query: str = "") -> str:
    return asgi_server.url.replace("http://", "ws://") + "/v1/realtime" + query


async def until(ws, kind: str, wait: float = 20) -> list[dict]:
    """Every event up to and including the first of `kind`."""
    events = []
    async with asyncio.timeout(wait):
        while True:
            event = json.loads(await ws.recv())
            events.append(event)
            if event["type"] == kind:
                return events


async def talk(ws, seconds: float = 1.0) -> list[dict]:
    """One turn with push-to-talk: audio, commit, a response; every event to its end."""
    await ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
    events = await until(ws, "session.updated")
    pcm = tone(seconds)
    for start in range(0, len(pcm), 4800):
        await ws.send(append(pcm[start : start + 4800]))
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    await ws.send(json.dumps({"type": "response.create"}))
    return events + await until(ws, "response.done")


def audio_out(events: list[dict]) -> int:
    return sum(
        len(base64.b64decode(e["delta"])) for e in events if e["type"] == "response.audio.delta"
    )


@sync_to_async
def booked(request_id: str) -> UsageRecord:
    """The session's one usage record and its one charge, once written (the console books
    a session once both its sides are closed, a moment after the client saw its close)."""
    for _ in range(100):
        settle_books()
        records = list(UsageRecord.objects.filter(request_id=request_id))
        if records:
            break
        time.sleep(0.05)
    assert len(records) == 1
    record = records[0]
    charges = LedgerEntry.objects.filter(request_id=request_id, kind=EntryKind.CHARGE)
    assert [entry.amount for entry in charges] == ([-record.cost] if record.cost else [])
    return record


@sync_to_async
def balance_of(workspace) -> int:
    settle_books()
    return BillingAccount.objects.get(workspace=workspace).balance


@pytest.fixture
def realtime_key(alice, acme) -> str:
    _key, secret = create_key(workspace=acme, name="voice app", created_by=alice)
    return secret


@pytest.fixture
def live(asgi_server, upstream_fleet):
    return asgi_server


async def test_a_session_with_a_key_in_the_subprotocol_relays_audio_both_ways(
    live, realtime_key, simulator
):
    protocols = [SUBPROTOCOL, KEY_SUBPROTOCOL + realtime_key]
    async with connect(ws_url(live), subprotocols=protocols) as ws:
        # Only the protocol is echoed, never the key.
        assert ws.subprotocol == SUBPROTOCOL
        assert realtime_key not in str(ws.response.headers)
        request_id = ws.response.headers["x-request-id"]
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        events = await talk(ws, 1.0)

    kinds = [e["type"] for e in events]
    assert "conversation.item.input_audio_transcription.delta" in kinds
    transcript = next(
        e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
    )
    assert transcript["transcript"]
    assert "response.audio.delta" in kinds and "response.audio_transcript.delta" in kinds
    done = events[-1]["response"]
    out = audio_out(events)
    assert out > 0

    record = await booked(request_id)
    assert (record.product, record.endpoint, record.status) == ("realtime", "/v1/realtime", 200)
    assert record.source == "api" and record.api_key_id is not None and record.node == "simulator"
    assert record.units["audio_in_seconds"] == 1.0
    assert record.units["audio_out_seconds"] == round(out / BYTES_PER_SECOND, 3)
    assert record.units["realtime_minute"] == minutes(BYTES_PER_SECOND + out) == 1
    assert record.tokens_in == done["usage"]["input_tokens"] > 0
    assert record.tokens_out == done["usage"]["output_tokens"] > 0
    assert record.cost == MINUTE_PRICE


async def test_a_session_with_a_bearer_key_and_the_model_in_the_query(live, realtime_key):
    headers = {"Authorization": f"Bearer {realtime_key}"}
    async with connect(ws_url(live, "?model=mira-pro"), additional_headers=headers) as ws:
        assert ws.subprotocol is None
        request_id = ws.response.headers["x-request-id"]
        assert json.loads(await ws.recv())["session"]["model"] == "mira-pro"
        events = await talk(ws, 0.5)
        assert audio_out(events) > 0
    record = await booked(request_id)
    assert record.model == "mira-pro" and record.units["audio_in_seconds"] == 0.5


async def test_the_x_api_key_header_works_through_channels_too(acme, realtime_key, upstream_fleet):
    from config.asgi import application

    ws = WebsocketCommunicator(
        application, "/v1/realtime", headers=[(b"x-api-key", realtime_key.encode())]
    )
    connected, _ = await ws.connect()
    assert connected
    try:
        assert (await ws.receive_json_from(timeout=10))["type"] == "session.created"
        await ws.send_to(text_data=append(tone(0.2)))
        await ws.send_to(text_data=json.dumps({"type": "input_audio_buffer.commit"}))
        kinds = []
        while "response.done" not in kinds:
            kinds.append((await ws.receive_json_from(timeout=10))["type"])
        assert "response.audio.delta" in kinds
    finally:
        await ws.disconnect()


async def _refused(headers=(), subprotocols=None, path="/v1/realtime") -> int:
    from config.asgi import application

    ws = WebsocketCommunicator(application, path, headers=list(headers), subprotocols=subprotocols)
    connected, code = await ws.connect()
    assert not connected
    await ws.disconnect()
    return code


async def test_bad_keys_scopes_and_origins_are_refused_before_accept(
    alice, acme, realtime_key, upstream_fleet, simulator
):
    before = simulator.stats()["websocket_sessions"]
    assert await _refused() == 4401
    assert await _refused([(b"authorization", b"Bearer sk-mira-nothing")]) == 4401
    assert await _refused(subprotocols=[SUBPROTOCOL, KEY_SUBPROTOCOL + "sk-mira-x"]) == 4401
    _key, chat_only = await sync_to_async(create_key)(
        workspace=acme, name="chat", created_by=alice, scopes=["chat"]
    )
    assert await _refused([(b"x-api-key", chat_only.encode())]) == 4403
    _key, mira_only = await sync_to_async(create_key)(
        workspace=acme, name="mira", created_by=alice, allowed_models=["mira"]
    )
    headers = [(b"x-api-key", mira_only.encode())]
    assert await _refused(headers, path="/v1/realtime?model=mira-pro") == 4403
    foreign = [(b"x-api-key", realtime_key.encode()), (b"origin", b"https://evil.example")]
    assert await _refused(foreign) == 4403
    assert await _refused([(b"x-api-key", realtime_key.encode())], path="/v1/realtimes") == 4404
    assert simulator.stats()["websocket_sessions"] == before
    # Nothing was booked or held for a refused session.
    assert await UsageRecord.objects.acount() == 0


async def test_a_refusal_over_a_real_socket_is_an_http_answer_that_names_the_problem(
    live, alice, acme
):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(live), subprotocols=[SUBPROTOCOL, KEY_SUBPROTOCOL + "sk-mira-x"]):
            pass
    response = refused.value.response
    assert response.status_code == 401
    assert json.loads(response.body)["error"]["code"] == "invalid_api_key"
    _key, chat_only = await sync_to_async(create_key)(
        workspace=acme, name="chat", created_by=alice, scopes=["chat"]
    )
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(live), additional_headers={"x-api-key": chat_only}):
            pass
    assert refused.value.response.status_code == 403
    assert "realtime" in json.loads(refused.value.response.body)["detail"]
    assert chat_only not in refused.value.response.body.decode()


async def test_the_upstream_session_closes_within_a_second_of_the_client_leaving(
    live, realtime_key, simulator
):
    headers = {"x-api-key": realtime_key}
    async with connect(ws_url(live), additional_headers=headers) as ws:
        await ws.recv()
        assert simulator.stats()["open_websockets"] >= 1
        opened = simulator.stats()["open_websockets"]
    left = time.monotonic()
    assert await await_for(lambda: simulator.stats()["open_websockets"] == opened - 1, 100)
    assert time.monotonic() - left < 1.0


async def test_a_client_that_vanishes_without_a_close_frame_is_booked_once(
    live, realtime_key, simulator
):
    ws = await connect(ws_url(live), additional_headers={"x-api-key": realtime_key})
    request_id = ws.response.headers["x-request-id"]
    await ws.recv()
    opened = simulator.stats()["open_websockets"]
    for _ in range(5):
        await ws.send(append(tone(0.2)))
    await asyncio.sleep(0.3)
    ws.transport.abort()  # the connection drops: no close frame
    left = time.monotonic()
    assert await await_for(lambda: simulator.stats()["open_websockets"] == opened - 1, 100)
    assert time.monotonic() - left < 1.0
    record = await booked(request_id)
    assert record.units["audio_in_seconds"] == 1.0 and record.cost == MINUTE_PRICE


async def test_the_client_is_closed_within_a_second_of_the_upstream_leaving(
    asgi_server, realtime_key, start_simulator
):
    node = start_simulator()
    previous = set_fleet(fleet_over(node, names=["short-lived"]))
    try:
        async with connect(
            ws_url(asgi_server), additional_headers={"x-api-key": realtime_key}
        ) as ws:
            request_id = ws.response.headers["x-request-id"]
            await ws.recv()
            node.request_stop()
            left = time.monotonic()
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 2)
            assert time.monotonic() - left < 1.5  # the node's own shutdown, then ours
        record = await booked(request_id)
        assert record.node == "short-lived"
    finally:
        set_fleet(previous)


def _poor_workspace(owner) -> tuple[Workspace, str]:
    """A workspace with $0.20: the first minute's worst case ($0.12) is held, the next is not there."""
    workspace = Workspace.objects.create(name="Initech", slug="initech")
    Membership.objects.create(user=owner, workspace=workspace, role=Role.OWNER)
    ledger.grant(workspace=workspace, amount=200_000, note="test credit", by=None)
    _key, secret = create_key(workspace=workspace, name="poor", created_by=owner)
    return workspace, secret


async def test_a_session_that_outlives_the_balance_is_ended_and_the_balance_stays_positive(
    live, acme, alice
):
    workspace, secret = await sync_to_async(_poor_workspace)(alice)
    async with connect(ws_url(live), additional_headers={"x-api-key": secret}) as ws:
        request_id = ws.response.headers["x-request-id"]
        await ws.recv()
        second = tone(1.0, loud=False)
        events = []
        with pytest.raises(ConnectionClosed):
            for _ in range(90):
                await ws.send(append(second))
            while True:
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        assert ws.close_code == 4402
    # The error event says why, before the close.
    error = next(e for e in events if e["type"] == "error")
    assert error["error"]["code"] == "insufficient_balance"
    assert "balance" in error["error"]["message"].lower()
    record = await booked(request_id)
    assert record.status == 402 and "balance" in record.error.lower()
    assert 59 <= record.units["audio_in_seconds"] <= 61
    assert record.cost == MINUTE_PRICE
    assert await balance_of(workspace) == 200_000 - record.cost >= 0


async def test_the_error_event_says_why_the_session_ended(live, realtime_key, settings):
    settings.GATEWAY_REALTIME_IDLE_SECONDS = 0.6
    async with connect(ws_url(live), additional_headers={"x-api-key": realtime_key}) as ws:
        request_id = ws.response.headers["x-request-id"]
        events = await until(ws, "error", wait=5)
        assert events[-1]["error"]["code"] == "idle_timeout"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4408
    record = await booked(request_id)
    assert record.status == 408 and record.cost == 0


async def test_a_session_ends_at_its_longest_length(live, realtime_key, settings):
    settings.GATEWAY_REALTIME_MAX_SECONDS = 0.8
    async with connect(ws_url(live), additional_headers={"x-api-key": realtime_key}) as ws:
        await ws.recv()
        await ws.send(append(tone(0.1)))
        events = await until(ws, "error", wait=5)
        assert events[-1]["error"]["code"] == "session_expired"


async def test_a_key_holds_at_most_so_many_sessions_at_once(live, realtime_key, settings):
    settings.GATEWAY_REALTIME_SESSIONS_PER_KEY = 1
    headers = {"x-api-key": realtime_key}
    async with connect(ws_url(live), additional_headers=headers) as first:
        await first.recv()
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(live), additional_headers=headers):
                pass
        assert refused.value.response.status_code == 429
        assert refused.value.response.headers["Retry-After"] == "1"
    # Once the first has closed, another may open.
    await asyncio.sleep(0.3)
    async with connect(ws_url(live), additional_headers=headers) as again:
        assert json.loads(await again.recv())["type"] == "session.created"


async def test_the_preflight_answers_the_fleets_capabilities(live, realtime_key, alice, acme):
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{live.url}/v1/realtime/preflight", headers={"x-api-key": realtime_key}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["protocols"] == [SUBPROTOCOL] and body["sample_rate_hz"] == 24_000
        assert "aria" in body["voices"] and body["input_audio_formats"] == ["pcm16"]
        assert set(body["auth"]) >= {"subprotocol", "bearer"}
        assert body["max_concurrent_sessions"] == 10
        _key, chat_only = await sync_to_async(create_key)(
            workspace=acme, name="chat", created_by=alice, scopes=["chat"]
        )
        refused = await client.get(
            f"{live.url}/v1/realtime/preflight", headers={"x-api-key": chat_only}
        )
        assert refused.status_code == 403
        assert (await client.get(f"{live.url}/v1/realtime/preflight")).status_code == 401


async def test_a_key_with_a_budget_renews_its_own_hold_and_is_ended_at_the_budget(
    live, acme, alice
):
    from console.models import Hold

    _key, secret = await sync_to_async(create_key)(
        workspace=acme, name="budgeted", created_by=alice, monthly_budget=200_000
    )
    before = await balance_of(acme)
    async with connect(ws_url(live), additional_headers={"x-api-key": secret}) as ws:
        request_id = ws.response.headers["x-request-id"]
        await ws.recv()
        events = []
        with pytest.raises(ConnectionClosed):
            for _ in range(90):
                await ws.send(append(tone(1.0, loud=False)))
            while True:
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        assert ws.close_code == 4402
    error = next(e for e in events if e["type"] == "error")
    assert "budget of this API key" in error["error"]["message"]
    record = await booked(request_id)
    assert record.units["audio_in_seconds"] == 60.0 and record.cost == MINUTE_PRICE
    assert await balance_of(acme) == before - MINUTE_PRICE
    assert not await Hold.objects.filter(request_id=request_id).aexists()


async def test_a_revoked_key_ends_its_sessions_within_a_second(live, acme, alice):
    key, secret = await sync_to_async(create_key)(
        workspace=acme, name="soon gone", created_by=alice
    )
    async with connect(ws_url(live), additional_headers={"x-api-key": secret}) as ws:
        request_id = ws.response.headers["x-request-id"]
        await ws.recv()
        await sync_to_async(revoke_key)(key=key, by=alice)
        revoked = time.monotonic()
        events = await until(ws, "error", wait=5)
        assert time.monotonic() - revoked < 1.5
        assert events[-1]["error"]["code"] == "inactive_api_key"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4401
    record = await booked(request_id)
    assert record.status == 401
