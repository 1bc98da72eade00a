"""The official OpenAI SDK works against the simulator by changing only the base URL and key."""

import openai
import pytest

from tests.upstream_fixtures import TEST_KEY


@pytest.fixture
def sdk(simulator):
    with openai.OpenAI(base_url=simulator.base_url, api_key=TEST_KEY, max_retries=0) as c:
        yield c


def test_the_sdk_completes_a_chat(sdk):
    completion = sdk.chat.completions.create(
        model="mira", messages=[{"role": "user", "content": "Hello, Mira!"}]
    )
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens > 0


def test_the_sdk_streams_a_chat(sdk):
    stream = sdk.chat.completions.create(
        model="mira",
        messages=[{"role": "user", "content": "reply with: streamed fine"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed fine"
    assert chunks[-1].usage.completion_tokens > 0


def test_the_sdk_calls_tools(sdk):
    completion = sdk.chat.completions.create(
        model="mira",
        messages=[{"role": "user", "content": "use lookup_order for order 'A-17'"}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "lookup_order",
                    "parameters": {
                        "type": "object",
                        "properties": {"order_id": {"type": "string"}},
                    },
                },
            }
        ],
    )
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup_order"
    assert "A-17" in call.function.arguments


def test_the_sdk_makes_embeddings(sdk):
    result = sdk.embeddings.create(model="mira-embed", input=["one", "two"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 1536


def test_the_sdk_lists_models(sdk):
    ids = [model.id for model in sdk.models.list()]
    assert "mira" in ids and "mira-embed" in ids
    assert sdk.models.retrieve("mira-max").id == "mira-max"


def test_the_sdk_raises_its_own_errors(simulator):
    with openai.OpenAI(base_url=simulator.base_url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="mira", messages=[{"role": "user", "content": "x"}])
