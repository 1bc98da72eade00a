"""The Responses API through the client, streamed and not."""

import pytest

from upstream import client
from upstream.errors import UpstreamError


async def test_it_answers_a_response_with_output_text(upstream_fleet):
    body = {"model": "mira", "input": "Summarise the plot of Hamlet", "instructions": "Be brief"}
    response = await client.responses(upstream_fleet, body)
    data = response.json()
    assert data["object"] == "response"
    assert data["status"] == "completed"
    text = data["output"][0]["content"][0]["text"]
    assert "Hamlet" in text
    usage = data["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_it_accepts_a_list_of_input_items(upstream_fleet):
    body = {
        "model": "mira",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "reply with: ok"}]}],
    }
    response = await client.responses(upstream_fleet, body)
    assert response.json()["output"][0]["content"][0]["text"] == "ok"


async def test_it_streams_text_deltas_and_a_completed_event(upstream_fleet):
    body = {"model": "mira", "input": "Tell me a story about a fox"}
    async with client.stream_responses(upstream_fleet, body) as stream:
        events = [event async for event in stream]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    final = events[-1]["response"]["output"][0]["content"][0]["text"]
    assert deltas == final and "fox" in final
    assert stream.done


async def test_max_output_tokens_makes_the_response_incomplete(upstream_fleet):
    body = {"model": "mira", "input": "Write an essay", "max_output_tokens": 3}
    data = (await client.responses(upstream_fleet, body)).json()
    assert data["status"] == "incomplete"
    assert data["incomplete_details"] == {"reason": "max_output_tokens"}
    assert data["usage"]["output_tokens"] == 3


async def test_it_requires_input(upstream_fleet):
    from upstream.errors import UpstreamError

    try:
        await client.responses(upstream_fleet, {"model": "mira"})
    except UpstreamError as error:
        assert error.status == 400
        assert error.detail == "The 'input' field is required."
    else:
        raise AssertionError("a response without input was accepted")


# --- the shapes coding agents send ---------------------------------------------------


async def test_a_custom_tool_is_called_with_free_text(upstream_fleet):
    body = {
        "model": "mira",
        "input": "Use apply_patch to change `README.md`",
        "tools": [{"type": "custom", "name": "apply_patch", "description": "Apply a patch"}],
    }
    (call,) = (await client.responses(upstream_fleet, body)).json()["output"]
    assert call["type"] == "custom_tool_call" and call["name"] == "apply_patch"
    assert call["input"] == "README.md" and call["call_id"].startswith("call_")


async def test_a_built_in_tool_is_refused_by_name(upstream_fleet):
    body = {"model": "mira", "input": "Look it up", "tools": [{"type": "web_search"}]}
    with pytest.raises(UpstreamError) as refused:
        await client.responses(upstream_fleet, body)
    assert refused.value.status == 400 and "'web_search'" in refused.value.detail


async def test_reminders_a_client_attaches_are_not_the_question(upstream_fleet):
    # A tool named like a word of the reminder is not called, and the reply quotes what
    # the user wrote.
    reminder = "<system-reminder>\nAn agent may read files.\n</system-reminder>"
    body = {
        "model": "mira",
        "input": [
            {"role": "developer", "content": "You are a coding agent."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": reminder},
                    {"type": "input_text", "text": "Say hello"},
                ],
            },
        ],  # fmt: skip
        "tools": [{"type": "function", "name": "agent", "parameters": {"type": "object"}}],
    }
    (message,) = (await client.responses(upstream_fleet, body)).json()["output"]
    assert message["type"] == "message"
    assert message["content"][0]["text"].startswith('You asked: "Say hello"')


async def test_an_unstored_response_cannot_be_gone_on_from(upstream_fleet):
    first = (
        await client.responses(upstream_fleet, {"model": "mira", "input": "Hi", "store": False})
    ).json()
    with pytest.raises(UpstreamError) as refused:
        await client.responses(
            upstream_fleet, {"model": "mira", "input": "And?", "previous_response_id": first["id"]}
        )
    assert refused.value.status == 400 and first["id"] in refused.value.detail
