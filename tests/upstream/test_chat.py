"""Chat completions through the client: answers, streams, limits, formats, tools, images."""

import base64
import io
import json

import pytest
from PIL import Image

from tests.upstream_fixtures import await_for
from upstream import client
from upstream.errors import UpstreamError


def ask(text: str, **extra) -> dict:
    return {"model": "mira", "messages": [{"role": "user", "content": text}], **extra}


async def collect(fleet, body: dict, **kwargs) -> tuple[list[dict], object]:
    async with client.stream_chat_completions(fleet, body, **kwargs) as stream:
        chunks = [chunk async for chunk in stream]
    return chunks, stream


def content_of(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_it_answers_a_chat_completion(upstream_fleet):
    response = await client.chat_completions(upstream_fleet, ask("What is machine learning?"))
    body = response.json()
    assert response.status == 200
    assert response.node == "simulator"
    assert response.request_id
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert "machine learning" in message["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


async def test_the_same_conversation_gets_the_same_reply(upstream_fleet):
    first = await client.chat_completions(upstream_fleet, ask("Explain recursion"))
    second = await client.chat_completions(upstream_fleet, ask("Explain recursion"))
    other = await client.chat_completions(upstream_fleet, ask("Explain gravity"))
    text = [r.json()["choices"][0]["message"]["content"] for r in (first, second, other)]
    assert text[0] == text[1] != text[2]


async def test_reply_with_makes_the_reply_exactly_that_text(upstream_fleet):
    literal = '<script>alert("x")</script>\n```python\nprint(1)\n```'
    response = await client.chat_completions(upstream_fleet, ask(f"Please reply with: {literal}"))
    assert response.json()["choices"][0]["message"]["content"] == literal


async def test_it_streams_a_role_delta_then_content_then_finish_and_done(upstream_fleet):
    chunks, stream = await collect(upstream_fleet, ask("Tell me about streams of water"))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len(chunks) > 20
    assert stream.done
    assert stream.chunks == len(chunks)
    assert stream.node == "simulator"
    whole = await client.chat_completions(upstream_fleet, ask("Tell me about streams of water"))
    assert content_of(chunks) == whole.json()["choices"][0]["message"]["content"]


async def test_the_first_chunk_arrives_while_the_upstream_is_still_streaming(
    start_simulator, make_fleet
):
    server = start_simulator(chunk_delay_ms=10)
    fleet = make_fleet(server)
    async with client.stream_chat_completions(fleet, ask("Go on", max_tokens=25)) as stream:
        first = await anext(stream)
        during = server.stats()
        rest = [chunk async for chunk in stream]
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert during["open_streams"] == 1 and during["streams_completed"] == 0
    assert len(rest) == 26
    # The simulator counts the stream once its handler has returned, just after [DONE].
    assert await await_for(lambda: server.stats()["streams_completed"] == 1, attempts=200)
    await fleet.aclose()


async def test_it_adds_a_usage_chunk_when_asked(upstream_fleet):
    body = ask("Count my tokens", stream_options={"include_usage": True})
    chunks, _ = await collect(upstream_fleet, body)
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == sum(
        1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")
    )
    plain, _ = await collect(upstream_fleet, ask("Count my tokens"))
    assert "usage" not in plain[-1]


async def test_max_tokens_cuts_the_reply_with_finish_reason_length(upstream_fleet):
    response = await client.chat_completions(upstream_fleet, ask("Write a lot", max_tokens=5))
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    chunks, _ = await collect(upstream_fleet, ask("Write a lot", max_tokens=5))
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert content_of(chunks) == body["choices"][0]["message"]["content"]


async def test_n_gives_that_many_choices_and_counts_every_one_in_the_usage(upstream_fleet):
    one = (await client.chat_completions(upstream_fleet, ask("reply with: a b c"))).json()
    three = (await client.chat_completions(upstream_fleet, ask("reply with: a b c", n=3))).json()
    assert [c["index"] for c in three["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in three["choices"]} == {"a b c"}
    assert three["usage"]["completion_tokens"] == 3 * one["usage"]["completion_tokens"]
    chunks, _ = await collect(
        upstream_fleet, ask("reply with: a b c", n=3, stream_options={"include_usage": True})
    )
    texts = ["", "", ""]
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
    assert texts == ["a b c"] * 3 and chunks[-1]["usage"] == three["usage"]


async def test_n_and_max_tokens_out_of_range_are_400s(upstream_fleet):
    for extra, detail in [
        ({"n": 9}, "The 'n' field must be between 1 and 8."),
        ({"max_tokens": 10**7}, "The 'max_tokens' field must be between 1 and 1000000."),
    ]:
        with pytest.raises(UpstreamError) as caught:
            await client.chat_completions(upstream_fleet, ask("hi", **extra))
        assert caught.value.status == 400 and caught.value.detail == detail


async def test_a_stop_sequence_ends_the_reply_before_it(upstream_fleet):
    response = await client.chat_completions(
        upstream_fleet, ask("reply with: one two three four", stop=[" three"])
    )
    assert response.json()["choices"][0]["message"]["content"] == "one two"


async def test_json_object_format_gives_valid_json(upstream_fleet):
    body = ask("Describe a cat", response_format={"type": "json_object"})
    response = await client.chat_completions(upstream_fleet, body)
    parsed = json.loads(response.json()["choices"][0]["message"]["content"])
    assert "cat" in parsed["answer"]


async def test_json_schema_format_gives_an_instance_of_the_schema(upstream_fleet):
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "population": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["capital", "town"]},
        },
        "required": ["city", "population", "tags", "kind"],
    }
    body = ask(
        "Tell me about Paris",
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    chunks, _ = await collect(upstream_fleet, body)
    parsed = json.loads(content_of(chunks))
    assert isinstance(parsed["city"], str)
    assert isinstance(parsed["population"], int)
    assert isinstance(parsed["tags"], list)
    assert parsed["kind"] == "capital"


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "celsius": {"type": "boolean"}},
            "required": ["city"],
        },
    },
}


async def test_it_calls_a_tool_the_prompt_asks_for(upstream_fleet):
    body = ask("Use get_weather for Berlin please", tools=[WEATHER_TOOL])
    response = await client.chat_completions(upstream_fleet, body)
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"])["city"] == "Berlin"


async def test_it_streams_a_tool_call_in_pieces(upstream_fleet):
    chunks, _ = await collect(upstream_fleet, ask("call the tool", tools=[WEATHER_TOOL]))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert "city" in json.loads(arguments)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_it_answers_with_the_tool_result(upstream_fleet):
    messages = [
        {"role": "user", "content": "What is the weather? call get_weather"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 degrees"},
    ]
    body = {"model": "mira", "messages": messages, "tools": [WEATHER_TOOL]}
    response = await client.chat_completions(upstream_fleet, body)
    content = response.json()["choices"][0]["message"]["content"]
    assert "get_weather" in content and "sunny, 21 degrees" in content


async def test_it_does_not_call_tools_unasked(upstream_fleet):
    response = await client.chat_completions(upstream_fleet, ask("Hello", tools=[WEATHER_TOOL]))
    assert response.json()["choices"][0]["finish_reason"] == "stop"


async def test_it_mentions_an_image_part_and_its_size(upstream_fleet):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    body = {"model": "mira", "messages": [{"role": "user", "content": content}]}
    response = await client.chat_completions(upstream_fleet, body)
    assert "PNG image of 64x48 pixels" in response.json()["choices"][0]["message"]["content"]


async def test_the_thinking_model_returns_its_thinking(upstream_fleet):
    response = await client.chat_completions(
        upstream_fleet, {**ask("Why?"), "model": "mira-thinking"}
    )
    body = response.json()
    assert body["choices"][0]["message"]["thinking"]
    assert body["usage"]["thinking_tokens"] > 0


async def test_a_provider_prefixed_model_is_sent_bare(upstream_fleet):
    response = await client.chat_completions(
        upstream_fleet, {**ask("Hi"), "model": "simulator/mira-pro"}
    )
    assert response.json()["model"] == "mira-pro"
