"""The playground's websocket: it streams replies as they are written, stops them at once,
books every call exactly once as the member, and serves only the member's own workspace."""

import base64
import json
import struct
import zlib

import pytest
from asgiref.sync import sync_to_async

from accounts.roles import Role
from console.models import UsageRecord
from playground.models import Conversation, Message, Status
from tests.conftest import seed_prices, signed_in
from tests.playground.conftest import (
    browser_of,
    communicator,
    frames_until,
    png_data_uri,
    session_headers,
    settings_for,
    text_of,
)
from tests.upstream_fixtures import await_for

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "Tell me a long story about rivers, deltas and the sea"


async def _send(ws, text: str, *, conversation=None, settings: dict | None = None, **more):
    """Send a message from the composer, as the page does (one column of mira by default)."""
    await ws.send_json_to(
        {
            "type": "send",
            "conversation": conversation,
            "text": text,
            "settings": settings_for() if settings is None else settings,
            **more,
        }
    )


async def _connected(headers, slug: str = "acme"):
    ws = communicator(headers, slug)
    connected, _ = await ws.connect()
    assert connected
    return ws


async def test_chunks_arrive_in_order_before_the_reply_ends(alice, alice_headers, slow_upstream):
    ws = await _connected(alice_headers)
    try:
        await _send(ws, QUESTION)
        first = await frames_until(ws, "delta")
        assert first[0]["type"] == "conversation"
        # The first piece is on the page while the upstream is still writing the rest.
        assert await UsageRecord.objects.acount() == 0
        frames = first + await frames_until(ws, "idle")
    finally:
        await ws.disconnect()

    kinds = [f["type"] for f in frames]
    deltas = [text_of(f["html"]) for f in frames if f["type"] == "delta"]
    assert len(deltas) >= 3
    for earlier, later in zip(deltas, deltas[1:], strict=False):
        assert later.startswith(earlier) and len(later) > len(earlier)
    last_delta = max(i for i, kind in enumerate(kinds) if kind == "delta")
    assert kinds.index("message") > last_delta
    final = next(f for f in frames if f["type"] == "message")
    reply = await Message.objects.aget(pk=final["id"])
    assert reply.status == Status.DONE and reply.content.startswith(deltas[-1][:20])
    assert text_of(final["html"]).count("You asked") == 1

    record = await UsageRecord.objects.aget()
    assert record.request_id == reply.request_id
    assert (record.source, record.user_id, record.status) == ("playground", alice.pk, 200)
    assert record.api_key_id is None and record.stream
    assert reply.tokens_out == record.tokens_out > 0 and reply.cost == record.cost > 0


async def test_stop_cancels_the_upstream_call_and_books_it_once(
    alice, alice_headers, slow_upstream
):
    cancelled = slow_upstream.stats()["streams_cancelled"]
    ws = await _connected(alice_headers)
    try:
        await _send(ws, QUESTION)
        await frames_until(ws, "delta")
        await frames_until(ws, "delta")
        await ws.send_json_to({"type": "stop"})
        frames = await frames_until(ws, "idle", wait=5)
    finally:
        await ws.disconnect()

    final = next(f for f in frames if f["type"] == "message")
    assert "stopped" in final["html"]
    assert await await_for(lambda: slow_upstream.stats()["streams_cancelled"] > cancelled)
    assert await await_for(lambda: slow_upstream.stats()["open_streams"] == 0)
    record = await UsageRecord.objects.aget()
    reply = await Message.objects.aget(pk=final["id"])
    assert reply.status == Status.STOPPED and reply.request_id == record.request_id
    assert record.status == 499 and record.source == "playground" and record.user_id == alice.pk
    assert 0 < record.tokens_out < 60
    assert reply.content and reply.tokens_out == record.tokens_out


async def test_closing_the_page_cancels_the_reply_and_books_it_once(
    alice, alice_headers, slow_upstream
):
    cancelled = slow_upstream.stats()["streams_cancelled"]
    ws = await _connected(alice_headers)
    await _send(ws, QUESTION)
    await frames_until(ws, "delta")
    await ws.disconnect()

    assert await await_for(lambda: slow_upstream.stats()["streams_cancelled"] > cancelled)
    assert await await_for(lambda: slow_upstream.stats()["open_streams"] == 0)
    record = await UsageRecord.objects.aget()
    assert record.status == 499 and record.user_id == alice.pk
    reply = await Message.objects.filter(role="assistant").aget()
    assert reply.status == Status.STOPPED and reply.request_id == record.request_id


async def test_compare_streams_each_column_as_its_own_call(alice, alice_headers, slow_upstream):
    ws = await _connected(alice_headers)
    try:
        await _send(ws, "Name three rivers", settings=settings_for("mira", "mira-pro"))
        frames = await frames_until(ws, "idle")
    finally:
        await ws.disconnect()

    columns = {f["column"] for f in frames if f["type"] == "column"}
    assert columns == {0, 1}
    replies = [f for f in frames if f["type"] == "message"]
    assert sorted(f["column"] for f in replies) == [0, 1]
    # Both replies were being written at the same time, not one after the other.
    delta_ids = [f["id"] for f in frames if f["type"] == "delta"]
    first_done = min(frames.index(f) for f in replies)
    assert {replies[0]["id"], replies[1]["id"]} <= set(delta_ids[: first_done + 1])
    records = [r async for r in UsageRecord.objects.order_by("model")]
    assert [r.model for r in records] == ["mira", "mira-pro"]
    assert len({r.request_id for r in records}) == 2
    conversation = await Conversation.objects.aget()
    leaves = [c["leaf"] for c in conversation.settings["columns"]]
    assert sorted(leaves) == sorted(f["id"] for f in replies)


async def test_regenerating_keeps_the_earlier_reply_as_a_branch(
    alice, alice_headers, upstream_fleet
):
    ws = await _connected(alice_headers)
    try:
        await _send(ws, "reply with: one")
        frames = await frames_until(ws, "idle")
        conversation = next(f["id"] for f in frames if f["type"] == "conversation")
        first = next(f["id"] for f in frames if f["type"] == "message")
        settings = settings_for()
        settings["columns"][0]["leaf"] = first
        await ws.send_json_to(
            {
                "type": "regenerate",
                "conversation": conversation,
                "column": 0,
                "message": first,
                "settings": settings,
            }
        )
        frames = await frames_until(ws, "idle")
        column = next(f for f in frames if f["type"] == "column")
        second = column["leaf"]
        assert second != first
        final = next(f for f in frames if f["type"] == "message")
        assert "2/2" in final["html"]

        await ws.send_json_to(
            {
                "type": "switch",
                "conversation": conversation,
                "column": 0,
                "message": first,
                "settings": settings,
            }
        )
        switched = await frames_until(ws, "column")
    finally:
        await ws.disconnect()

    assert switched[-1]["leaf"] == first and "1/2" in switched[-1]["html"]
    saved = await Conversation.objects.aget(pk=conversation)
    assert saved.settings["columns"][0]["leaf"] == first
    assert await UsageRecord.objects.acount() == 2


async def test_editing_a_question_answers_it_again_beside_the_original(
    alice, alice_headers, upstream_fleet
):
    ws = await _connected(alice_headers)
    try:
        await _send(ws, "reply with: A")
        frames = await frames_until(ws, "idle")
        conversation = next(f["id"] for f in frames if f["type"] == "conversation")
        question = await Message.objects.aget(role="user")
        await ws.send_json_to(
            {
                "type": "edit",
                "conversation": conversation,
                "column": 0,
                "message": question.pk,
                "text": "reply with: B",
                "settings": settings_for(),
            }
        )
        frames = await frames_until(ws, "idle")
    finally:
        await ws.disconnect()

    final = next(f for f in frames if f["type"] == "message")
    assert text_of(final["html"]).startswith("mira")
    reply = await Message.objects.aget(pk=final["id"])
    assert reply.content == "B"
    questions = [m async for m in Message.objects.filter(role="user").order_by("pk")]
    assert [q.content for q in questions] == ["reply with: A", "reply with: B"]
    assert questions[0].parent_id == questions[1].parent_id is None
    column = next(f for f in frames if f["type"] == "column")
    assert "2/2" in column["html"]


async def test_an_image_is_sent_as_an_image_url_part(alice, alice_headers, upstream_fleet):
    ws = await _connected(alice_headers)
    try:
        await _send(ws, "What is in this picture?", images=[png_data_uri(3, 2)])
        frames = await frames_until(ws, "idle")
    finally:
        await ws.disconnect()
    reply = await Message.objects.aget(role="assistant")
    assert "a PNG image of 3x2 pixels" in reply.content
    column = next(f for f in frames if f["type"] == "column")
    assert "Attached image 1" in column["html"] and "data:image" not in column["html"]


async def test_a_bad_image_is_refused_with_a_clear_message(alice, alice_headers, upstream_fleet):
    ws = await _connected(alice_headers)
    try:
        await _send(ws, "Look", images=["data:image/png;base64,aGVsbG8="])
        problem = await ws.receive_json_from(timeout=5)
        await _send(ws, "Look", images=["data:application/pdf;base64,aGVsbG8="])
        wrong_type = await ws.receive_json_from(timeout=5)
    finally:
        await ws.disconnect()
    assert problem == {"type": "problem", "message": "Image 1 could not be read as an image."}
    assert wrong_type["message"] == "Image 1 is not a PNG, JPEG, GIF or WebP image."
    assert await Conversation.objects.acount() == 0


def _png_header_only(width: int, height: int) -> str:
    """A PNG that says it is `width` x `height` pixels: a few dozen bytes that would decode
    to far more (a decompression bomb), without anyone having to draw it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (8_000, 8_000),  # over the playground's limit, under Pillow's
        (10_000, 10_000),  # over Pillow's warning
        (20_000, 20_000),  # over what Pillow refuses outright
    ],
)
async def test_an_image_with_too_many_pixels_is_refused_naming_the_limit(
    alice, alice_headers, upstream_fleet, width, height
):
    ws = await _connected(alice_headers)
    try:
        await _send(ws, "Look", images=[png_data_uri(3, 2), _png_header_only(width, height)])
        problem = await ws.receive_json_from(timeout=5)
    finally:
        await ws.disconnect()
    assert problem == {
        "type": "problem",
        "message": "Image 2 has too many pixels: the limit is 50 megapixels.",
    }
    assert await Conversation.objects.acount() == 0


async def test_bad_settings_are_named(alice, alice_headers, upstream_fleet):
    ws = await _connected(alice_headers)
    try:
        settings = {"columns": [{"model": "mira", "temperature": 3}]}
        await _send(ws, "Hi", settings=settings)
        problem = await ws.receive_json_from(timeout=5)
    finally:
        await ws.disconnect()
    assert problem["type"] == "problem"
    assert problem["message"].startswith("Temperature (column A): ")


async def test_an_empty_balance_shows_where_to_add_credit(charlie, upstream_fleet):
    await sync_to_async(seed_prices)()
    headers = await sync_to_async(session_headers)(charlie)
    ws = await _connected(headers, "globex")
    try:
        await _send(ws, "Hello")
        frames = await frames_until(ws, "idle")
    finally:
        await ws.disconnect()
    final = next(f for f in frames if f["type"] == "message")
    assert "Not enough credit" in final["html"]
    assert "Add credit on the Billing page" in final["html"]
    assert 'href="/w/globex/billing/"' in final["html"]
    reply = await Message.objects.aget(pk=final["id"])
    assert reply.status == Status.ERROR and reply.error_status == 402
    assert await UsageRecord.objects.acount() == 0  # refused before anything went upstream


async def test_an_upstream_failure_is_shown_with_what_to_do(
    alice, alice_headers, start_simulator, make_fleet
):
    from upstream.fleet import set_fleet

    failing = make_fleet(start_simulator(fail_status=503))
    previous = set_fleet(failing)
    ws = await _connected(alice_headers)
    try:
        await _send(ws, "Hello")
        frames = await frames_until(ws, "idle")
    finally:
        await ws.disconnect()
        set_fleet(previous)
    final = next(f for f in frames if f["type"] == "message")
    assert "The upstream is unavailable" in final["html"] and "Try again" in final["html"]
    record = await UsageRecord.objects.aget()
    assert record.status == 503 and record.source == "playground"


async def test_a_foreign_origin_is_refused(alice):
    headers = await sync_to_async(session_headers)(alice, b"https://evil.example")
    ws = communicator(headers)
    connected, _ = await ws.connect()
    assert not connected
    await ws.disconnect()


async def test_an_anonymous_visitor_is_refused(db):
    ws = communicator([(b"origin", b"http://testserver"), (b"host", b"testserver")])
    connected, code = await ws.connect()
    assert not connected and code == 4401
    await ws.disconnect()


async def test_another_workspace_is_refused(alice, charlie):
    headers = await sync_to_async(session_headers)(charlie)
    ws = communicator(headers, "acme")
    connected, code = await ws.connect()
    assert not connected and code == 4403
    await ws.disconnect()


async def test_a_viewer_is_refused(member_of_acme):
    viewer = await sync_to_async(member_of_acme)(Role.VIEWER)
    headers = await sync_to_async(session_headers)(viewer)
    ws = communicator(headers, "acme")
    connected, code = await ws.connect()
    assert not connected and code == 4403
    await ws.disconnect()


async def test_nobody_can_continue_someone_elses_conversation(
    alice, bob, alice_headers, upstream_fleet
):
    ws = await _connected(alice_headers)
    try:
        await _send(ws, "reply with: hi")
        frames = await frames_until(ws, "idle")
    finally:
        await ws.disconnect()
    conversation = next(f["id"] for f in frames if f["type"] == "conversation")

    headers = await sync_to_async(session_headers)(bob)
    ws = await _connected(headers)
    try:
        await _send(ws, "x", conversation=conversation)
        problem = await ws.receive_json_from(timeout=5)
        await ws.send_json_to({"type": "show", "conversation": conversation, "column": 0})
        shown = await ws.receive_json_from(timeout=5)
    finally:
        await ws.disconnect()
    assert problem["message"] == "That conversation does not exist (or is not yours)."
    assert shown["type"] == "problem"
    assert await Message.objects.acount() == 2


async def test_playground_calls_are_booked_as_the_member(alice, bob, upstream_fleet):
    headers = await sync_to_async(session_headers)(bob)
    ws = await _connected(headers)
    try:
        await _send(ws, "Hi")
        await frames_until(ws, "idle")
    finally:
        await ws.disconnect()
    record = await UsageRecord.objects.aget()
    assert (record.source, record.user_id, record.api_key_id) == ("playground", bob.pk, None)
    assert record.product == "chat" and record.endpoint == "/v1/chat/completions"
    assert record.workspace_id == (await Conversation.objects.aget()).workspace_id


async def test_json_output_and_stop_sequences_are_passed_on(alice, alice_headers, upstream_fleet):
    ws = await _connected(alice_headers)
    try:
        await _send(ws, "Name a river", settings=settings_for(response_format="json_object"))
        frames = await frames_until(ws, "idle")
        await _send(ws, "reply with: one two ### three", settings=settings_for(stop=["###"]))
        stopped = await frames_until(ws, "idle")
        await _send(ws, "x", settings=settings_for(response_format="json_schema", json_schema="[1"))
        problem = await ws.receive_json_from(timeout=5)
    finally:
        await ws.disconnect()
    final = next(f for f in frames if f["type"] == "message")
    assert 'data-lang="json"' in final["html"]
    reply = await Message.objects.aget(pk=final["id"])
    assert json.loads(reply.content)["model"] == "mira"
    assert reply.params["response_format"] == {"type": "json_object"}
    cut = await Message.objects.aget(pk=next(f["id"] for f in stopped if f["type"] == "message"))
    assert cut.content.strip() == "one two" and cut.params["stop"] == ["###"]
    assert problem["message"] == "JSON schema: enter a JSON object (e.g. a JSON Schema)."


async def test_a_member_demoted_to_viewer_is_cut_off(bob, upstream_fleet):
    from accounts.models import Membership

    headers = await sync_to_async(session_headers)(bob)
    ws = await _connected(headers)
    try:
        await Membership.objects.filter(user=bob).aupdate(role=Role.VIEWER)
        await _send(ws, "Hi")
        problem = await ws.receive_json_from(timeout=5)
        closed = await ws.receive_output(timeout=5)
    finally:
        await ws.disconnect()
    assert problem["message"] == "You may no longer use the playground in this workspace."
    assert closed == {"type": "websocket.close", "code": 4403}
    assert await Conversation.objects.acount() == 0
    assert await UsageRecord.objects.acount() == 0


# ---------- a signed-out browser, or a former member, has no open socket ----------


async def _until_closed(ws) -> tuple[list[dict], dict]:
    """The frames the page gets before the server closes its socket, and the close."""
    frames = []
    while True:
        output = await ws.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return frames, output
        frames.append(json.loads(output["text"]))


async def _still_open(ws) -> bool:
    await ws.send_json_to({"type": "show", "conversation": None, "column": 0})
    return (await ws.receive_json_from(timeout=5))["type"] == "column"


async def test_signing_out_closes_that_browsers_playground_socket(alice, upstream_fleet):
    client, headers = await sync_to_async(browser_of)(alice)
    _other_client, other_headers = await sync_to_async(browser_of)(alice)
    ws = await _connected(headers)
    other = await _connected(other_headers)
    try:
        await sync_to_async(client.post)("/accounts/logout/")
        _frames, closed = await _until_closed(ws)
        assert closed == {"type": "websocket.close", "code": 4401}
        assert await _still_open(other)  # the same person signed in elsewhere keeps theirs
    finally:
        await ws.disconnect()
        await other.disconnect()


async def test_signing_out_stops_a_streaming_reply_and_books_it(alice, slow_upstream):
    client, headers = await sync_to_async(browser_of)(alice)
    ws = await _connected(headers)
    try:
        await _send(ws, QUESTION)
        await frames_until(ws, "delta")
        await sync_to_async(client.post)("/accounts/logout/")
        frames, closed = await _until_closed(ws)
    finally:
        await ws.disconnect()
    assert closed["code"] == 4401
    final = next(f for f in frames if f["type"] == "message")
    reply = await Message.objects.aget(pk=final["id"])
    record = await UsageRecord.objects.aget()
    assert reply.status == Status.STOPPED and reply.request_id == record.request_id
    assert record.status == 499 and record.user_id == alice.pk


async def test_removing_a_member_closes_their_sockets_in_that_workspace_only(
    alice, bob, globex, upstream_fleet
):
    from accounts.models import Membership

    await Membership.objects.acreate(user=bob, workspace=globex, role=Role.DEVELOPER)
    _client, headers = await sync_to_async(browser_of)(bob)
    acme_ws = await _connected(headers, "acme")
    globex_ws = await _connected(headers, "globex")
    try:
        membership = await Membership.objects.aget(user=bob, workspace__slug="acme")
        alice_client = await sync_to_async(signed_in)(alice)
        await sync_to_async(alice_client.post)(f"/w/acme/members/{membership.pk}/remove/")
        _frames, closed = await _until_closed(acme_ws)
        assert closed == {"type": "websocket.close", "code": 4403}
        assert await _still_open(globex_ws)
    finally:
        await acme_ws.disconnect()
        await globex_ws.disconnect()


async def test_leaving_closes_ones_own_sockets(bob, upstream_fleet):
    client, headers = await sync_to_async(browser_of)(bob)
    ws = await _connected(headers)
    try:
        await sync_to_async(client.post)("/w/acme/leave/")
        _frames, closed = await _until_closed(ws)
    finally:
        await ws.disconnect()
    assert closed["code"] == 4403


async def test_a_role_without_the_playground_closes_the_socket_and_one_with_it_does_not(
    alice, bob, upstream_fleet
):
    from accounts.models import Membership

    _client, headers = await sync_to_async(browser_of)(bob)
    ws = await _connected(headers)
    alice_client = await sync_to_async(signed_in)(alice)
    membership = await Membership.objects.aget(user=bob)
    role_url = f"/w/acme/members/{membership.pk}/role/"
    try:
        await sync_to_async(alice_client.post)(role_url, {"role": "admin"})
        assert await _still_open(ws)
        await sync_to_async(alice_client.post)(role_url, {"role": "viewer"})
        _frames, closed = await _until_closed(ws)
    finally:
        await ws.disconnect()
    assert closed["code"] == 4403
