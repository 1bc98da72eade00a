"""The Responses page's websocket against the real simulator: each event of a streamed
/v1/responses call reaches the page as it comes, the run is kept and booked once as the
member; stop cancels it; bad fields are named; other workspaces and origins are refused."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from console.models import UsageRecord
from playground.models import ResponseRun
from tests.conftest import settle_books
from tests.playground.conftest import frames_until, session_headers, text_of
from tests.upstream_fixtures import await_for

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "Tell me a long story about rivers, deltas and the sea"


def socket(headers, slug: str = "acme") -> WebsocketCommunicator:
    from config.asgi import application

    return WebsocketCommunicator(application, f"/ws/playground/{slug}/responses/", headers=headers)


async def _connected(headers, slug: str = "acme") -> WebsocketCommunicator:
    ws = socket(headers, slug)
    connected, _ = await ws.connect()
    assert connected
    return ws


async def test_events_stream_in_order_and_the_run_is_kept(alice, alice_headers, slow_upstream):
    ws = await _connected(alice_headers)
    try:
        fields = {"input": QUESTION, "model": "mira", "instructions": "Be vivid.", "stream": "on"}
        await ws.send_json_to({"type": "send", "fields": fields})
        first = await frames_until(ws, "event")
        # The first event is on the page while the upstream is still writing the rest.
        assert await ResponseRun.objects.acount() == 0
        frames = first + await frames_until(ws, "done")
    finally:
        await ws.disconnect()
    events = [f["event"] for f in frames if f["type"] == "event"]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert kinds.count("response.output_text.delta") >= 3 and deltas
    run = await ResponseRun.objects.aget()
    assert run.events == events and run.response == events[-1]["response"]
    assert run.request["stream"] is True and run.request["instructions"] == "Be vivid."
    done = frames[-1]
    assert deltas[:40] in text_of(done["html"])
    assert QUESTION[:30] in text_of(done["history"])
    await settle_books_async()
    record = await UsageRecord.objects.aget()
    assert record.request_id == run.request_id and record.product == "responses"
    assert record.source == "playground" and record.user_id == alice.pk
    assert run.cost == record.cost > 0 and run.tokens_out == record.tokens_out > 0


async def settle_books_async() -> None:
    await sync_to_async(settle_books)()


async def test_stop_cancels_the_stream_and_books_it_once(alice, alice_headers, slow_upstream):
    cancelled = slow_upstream.stats()["streams_cancelled"]
    ws = await _connected(alice_headers)
    try:
        await ws.send_json_to({"type": "send", "fields": {"input": QUESTION, "model": "mira"}})
        await frames_until(ws, "event")
        await frames_until(ws, "event")
        await ws.send_json_to({"type": "stop"})
        await frames_until(ws, "stopped", wait=5)
    finally:
        await ws.disconnect()
    assert await await_for(lambda: slow_upstream.stats()["streams_cancelled"] > cancelled)
    await settle_books_async()
    record = await UsageRecord.objects.aget()
    assert record.status == 499 and record.source == "playground"
    assert await ResponseRun.objects.acount() == 0


async def test_bad_fields_are_named_and_cost_nothing(alice, alice_headers, upstream_fleet):
    ws = await _connected(alice_headers)
    try:
        await ws.send_json_to({"type": "send", "fields": {"input": " ", "model": "mira"}})
        (problem,) = await frames_until(ws, "problem")
        assert problem["message"] == "Write a prompt to send."
        fields = {"input": "Hi", "model": "mira", "tools": '[{"type": "web_search"}]'}
        await ws.send_json_to({"type": "send", "fields": fields})
        (problem,) = await frames_until(ws, "problem")
        assert "Tool 1 is not a function tool" in problem["message"]
        await ws.send_json_to({"type": "send", "fields": {"input": "Hi", "model": "nope"}})
        (problem,) = await frames_until(ws, "problem")
        assert "nope" in problem["message"] or "model" in problem["message"].lower()
    finally:
        await ws.disconnect()
    assert await ResponseRun.objects.acount() == 0


async def test_another_workspace_or_origin_is_refused(charlie, alice, upstream_fleet):
    ws = socket(await sync_to_async(session_headers)(charlie))
    connected, _ = await ws.connect()
    assert not connected
    ws = socket(await sync_to_async(session_headers)(alice, b"https://evil.example"))
    connected, _ = await ws.connect()
    assert not connected
