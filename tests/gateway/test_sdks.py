"""The official OpenAI and Anthropic SDKs work against the console, unchanged."""

import anthropic
import openai
import pytest

from tests.conftest import usage_records


def _openai(console_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=console_url, api_key=key, max_retries=0)


def test_openai_lists_models(console_url, api_key):
    ids = [m.id for m in _openai(console_url, api_key).models.list()]
    assert "mira" in ids and "mira-embed" in ids


def test_openai_chat_completes_and_the_call_is_metered(console_url, api_key):
    reply = _openai(console_url, api_key).chat.completions.create(
        model="mira",
        messages=[{"role": "user", "content": "Say hello to the console"}],
        max_tokens=50,
    )
    assert reply.choices[0].message.content
    record = usage_records().get()
    assert record.status == 200 and record.model == "mira" and record.product == "chat"
    assert record.tokens_in == reply.usage.prompt_tokens
    assert record.tokens_out == reply.usage.completion_tokens
    assert record.node == "simulator" and record.api_key.name == "test key"


def test_openai_chat_streams(console_url, api_key):
    stream = _openai(console_url, api_key).chat.completions.create(
        model="mira", messages=[{"role": "user", "content": "Tell me about streams"}], stream=True
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 3
    record = usage_records().get()
    assert record.stream and record.status == 200 and record.tokens_out > 0


def test_a_bad_key_raises_the_sdks_authentication_error(console_url, db):
    with pytest.raises(openai.AuthenticationError) as caught:
        _openai(console_url, "sk-mira-" + "0" * 46).models.list()
    assert "Invalid API key" in str(caught.value)
    assert not usage_records().exists()


def test_openai_embeddings(console_url, api_key):
    result = _openai(console_url, api_key).embeddings.create(
        model="mira-embed", input=["red apples", "green apples"]
    )
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0
    record = usage_records().get()
    assert record.product == "embeddings" and record.tokens_in == result.usage.prompt_tokens


def _anthropic(console_url: str, key: str) -> anthropic.Anthropic:
    # The Anthropic SDK appends /v1 itself.
    return anthropic.Anthropic(base_url=console_url.removesuffix("/v1"), api_key=key, max_retries=0)


def test_anthropic_messages(console_url, api_key):
    message = _anthropic(console_url, api_key).messages.create(
        model="mira",
        max_tokens=100,
        system="You are terse.",
        messages=[{"role": "user", "content": "Describe the sea"}],
    )
    assert message.role == "assistant" and message.content[0].type == "text"
    assert message.content[0].text and message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    record = usage_records().get()
    assert record.endpoint == "/v1/messages" and record.tokens_out == message.usage.output_tokens


def test_anthropic_messages_stream(console_url, api_key):
    client = _anthropic(console_url, api_key)
    with client.messages.stream(
        model="mira", max_tokens=200, messages=[{"role": "user", "content": "Tell a story"}]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) > 3
    assert final.content[0].text == "".join(texts)
    assert final.usage.output_tokens > 0 and final.stop_reason in ("end_turn", "max_tokens")
    assert usage_records().get().stream


def test_anthropic_bad_key_raises_its_authentication_error(console_url, db):
    with pytest.raises(anthropic.AuthenticationError):
        _anthropic(console_url, "sk-mira-nope").messages.create(
            model="mira", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )


def test_responses_api(console_url, api_key):
    result = _openai(console_url, api_key).responses.create(model="mira", input="Say something")
    assert result.output_text
    assert usage_records().get().product == "responses"


def test_openai_tools_json_mode_and_image_parts_pass_through(console_url, api_key):
    client = _openai(console_url, api_key)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    called = client.chat.completions.create(
        model="mira",
        tools=tools,
        messages=[{"role": "user", "content": "Use get_weather for Paris"}],
    )
    assert called.choices[0].finish_reason == "tool_calls"
    assert called.choices[0].message.tool_calls[0].function.name == "get_weather"

    as_json = client.chat.completions.create(
        model="mira",
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "List three colours as JSON"}],
    )
    import json

    assert isinstance(json.loads(as_json.choices[0].message.content), dict)

    pixel = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
        "DwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    seen = client.chat.completions.create(
        model="mira",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": pixel}},
                ],
            }
        ],
    )
    assert "image" in seen.choices[0].message.content.lower()
    assert usage_records().count() == 3
