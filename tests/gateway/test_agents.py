"""Coding agents through the console: the requests Claude Code, Codex and OpenCode send
today (recorded from the real clients by tests/agents/capture.py, their prose replaced),
answered through a live console on the simulator, streamed and not; and the newest
shapes of the Messages and Responses APIs through the official SDKs.

The real clients themselves run against a console in tests/agents/test_clients.py.
"""

import json
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from accounts.models import Workspace
from console import ledger, pricing
from console.actions import create_key
from gateway.errors import ApiError
from gateway.messages import MessagesRequest, to_chat
from tests.conftest import usage_records
from tests.gateway.conftest import charged
from tests.upstream_fixtures import wait_for

REQUESTS = Path(__file__).parent / "agent_requests"


def recorded(name: str) -> dict:
    return json.loads((REQUESTS / f"{name}.json").read_text())


def events(response: httpx.Response) -> list[tuple[str | None, dict | str]]:
    """A server-sent event stream as (event name, data) pairs."""
    out: list[tuple[str | None, dict | str]] = []
    for block in response.text.split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None:
            out.append((name, data if data == "[DONE]" else json.loads(data)))
    return out


def send(asgi_server, key: str, name: str, *, stream: bool) -> httpx.Response:
    request = recorded(name)
    body = request["body"] | {"stream": stream}
    headers = request["headers"] | {"authorization": f"Bearer {key}", "x-api-key": key}
    if not stream:
        headers["accept"] = "application/json"
    return httpx.post(asgi_server.url + request["path"], json=body, headers=headers, timeout=60)


def answer_text(name: str, response: httpx.Response, stream: bool) -> str:
    """The text the agent would show, from whichever protocol it speaks."""
    path = recorded(name)["path"]
    if not stream:
        data = response.json()
        if path.startswith("/v1/messages"):
            assert data["type"] == "message" and data["usage"]["output_tokens"] > 0
            return "".join(b.get("text", "") for b in data["content"])
        if path.startswith("/v1/responses"):
            assert data["status"] == "completed" and data["usage"]["output_tokens"] > 0
            return "".join(
                part["text"]
                for item in data["output"]
                if item["type"] == "message"
                for part in item["content"]
            )
        assert data["usage"]["completion_tokens"] > 0
        return data["choices"][0]["message"]["content"] or ""
    stream_events = events(response)
    if path.startswith("/v1/messages"):
        names = [name for name, _ in stream_events]
        assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
        assert names.count("content_block_start") == names.count("content_block_stop")
        return "".join(
            data["delta"].get("text", "")
            for name, data in stream_events
            if name == "content_block_delta"
        )
    if path.startswith("/v1/responses"):
        assert stream_events[0][0] == "response.created"
        completed = [data for name, data in stream_events if name == "response.completed"]
        assert completed and completed[0]["response"]["usage"]["output_tokens"] > 0
        return "".join(
            data["delta"] for name, data in stream_events if name == "response.output_text.delta"
        )
    assert stream_events[-1][1] == "[DONE]"
    return "".join(
        data["choices"][0]["delta"].get("content") or ""
        for _, data in stream_events[:-1]
        if data["choices"]
    )


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("claude_code_first", 'You asked: "Say hello"'),
        ("claude_code_tool_result", "The tool Bash returned: claude-was-here"),
        ("codex_first", 'You asked: "Say hello"'),
        ("codex_tool_output", "codex-was-here"),
        ("opencode_title", "Say hello"),
        ("opencode_first", "Say hello"),
        ("opencode_tool_result", "The tool bash returned: opencode-was-here"),
    ],
)
def test_what_each_agent_sends_today_is_answered(asgi_server, upstream_fleet, api_key, name,
                                                 expected, stream):  # fmt: skip
    response = send(asgi_server, api_key, name, stream=stream)
    assert response.status_code == 200, response.text
    assert expected in answer_text(name, response, stream)
    record = charged(response.headers["x-request-id"])
    assert record.status == 200 and record.stream == stream
    assert record.tokens_in > 0 and record.tokens_out > 0 and record.cost > 0


def test_claude_codes_reminders_are_context_not_the_question(asgi_server, upstream_fleet,
                                                             api_key):  # fmt: skip
    # The first turn holds a <system-reminder> block before what the user typed, and the
    # tools include one named Agent: the answer is to the question, not a call to Agent.
    response = send(asgi_server, api_key, "claude_code_first", stream=False)
    assert [block["type"] for block in response.json()["content"]] == ["text"]


# --- the Messages API's newer shapes ------------------------------------------------


def _anthropic(console_url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=console_url.removesuffix("/v1"), api_key=key, max_retries=0)


def test_thinking_is_shown_when_asked_and_charged_as_output(console_url, api_key):
    client = _anthropic(console_url, api_key)
    message = client.messages.create(
        model="mira-thinking",
        max_tokens=400,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
    )
    thinking, text = message.content
    assert thinking.type == "thinking" and "sky blue" in thinking.thinking
    assert thinking.signature and text.type == "text"
    assert usage_records().get().tokens_out == message.usage.output_tokens
    # The thinking is output, as Mira's own usage for the same conversation says.
    plain = httpx.post(
        f"{console_url}/chat/completions",
        json={"model": "mira-thinking", "max_tokens": 400,
              "messages": [{"role": "user", "content": "Why is the sky blue?"}]},
        headers={"Authorization": f"Bearer {api_key}"},
    ).json()["usage"]  # fmt: skip
    assert plain["thinking_tokens"] > 0
    assert message.usage.output_tokens == plain["completion_tokens"] + plain["thinking_tokens"]
    assert usage_records().order_by("created_at").last().tokens_out == message.usage.output_tokens


def test_thinking_is_kept_back_unless_asked_and_omitted_when_so_displayed(console_url, api_key):
    client = _anthropic(console_url, api_key)
    ask = {"model": "mira-thinking", "max_tokens": 300,
           "messages": [{"role": "user", "content": "Why is the sky blue?"}]}  # fmt: skip
    plain = client.messages.create(**ask)
    assert [block.type for block in plain.content] == ["text"]
    omitted = client.messages.create(**ask, thinking={"type": "adaptive", "display": "omitted"})
    thinking = omitted.content[0]
    assert thinking.type == "thinking" and thinking.thinking == "" and thinking.signature
    disabled = client.messages.create(**ask, thinking={"type": "disabled"})
    assert [block.type for block in disabled.content] == ["text"]


def test_a_stream_has_a_thinking_block_with_its_signature_then_the_text(console_url, api_key):
    client = _anthropic(console_url, api_key)
    with client.messages.stream(
        model="mira-thinking",
        max_tokens=300,
        thinking={"type": "adaptive"},
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds and "signature" in kinds
    thinking, text = final.content
    assert thinking.type == "thinking" and "sky blue" in thinking.thinking
    assert thinking.signature and text.type == "text" and "sky blue" in text.text


def test_a_tool_call_streams_as_input_json_deltas_the_sdk_assembles(console_url, api_key):
    client = _anthropic(console_url, api_key)
    tool = {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "cache_control": {"type": "ephemeral"},
    }
    with client.messages.stream(
        model="mira",
        max_tokens=300,
        tools=[tool],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    (call,) = final.content
    assert (
        call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    )
    assert final.stop_reason == "tool_use"


def test_beta_fields_and_headers_are_accepted(console_url, api_key):
    client = _anthropic(console_url, api_key)
    message = client.beta.messages.create(
        model="mira",
        max_tokens=100,
        betas=["context-management-2025-06-27", "interleaved-thinking-2025-05-14"],
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Say hello", "cache_control": {"type": "ephemeral"}}
                ],
            },  # fmt: skip
        ],
        metadata={"user_id": "someone"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        extra_body={"output_config": {"effort": "high"}},
    )
    assert "Say hello" in message.content[0].text


def _chat(body: dict) -> dict:
    spec = MessagesRequest.model_validate({"model": "mira", "max_tokens": 10} | body, strict=True)
    return to_chat(spec)


def test_system_turns_documents_and_tool_results_translate_to_chat():
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": pixel},
    }
    chat = _chat({
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [
                {"type": "document", "title": "Notes",
                 "source": {"type": "text", "media_type": "text/plain", "data": "Line one."}},
                {"type": "text", "text": "Summarise."},
            ]},
            {"role": "system", "content": "Now answer in French."},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "tool_use", "id": "t1", "name": "look", "input": {"q": 1}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "is_error": True,
                 "content": [{"type": "text", "text": "not found"}, image]},
                {"type": "text", "text": "Go on."},
            ]},
        ],
    })  # fmt: skip
    assert [m["role"] for m in chat["messages"]] == [
        "system",
        "user",
        "system",
        "assistant",
        "tool",
        "user",
    ]
    assert chat["messages"][1]["content"] == "Notes\n\nLine one.\nSummarise."
    assert chat["messages"][2]["content"] == "Now answer in French."
    assert chat["messages"][3]["content"] is None  # the thinking is not sent back
    assert chat["messages"][3]["tool_calls"][0]["function"] == {
        "name": "look",
        "arguments": '{"q": 1}',
    }
    assert chat["messages"][4] == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": "Error: not found",
    }
    image_part, text_part = chat["messages"][5]["content"]
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")
    assert text_part == {"type": "text", "text": "Go on."}


def test_tool_choices_structured_output_and_deferred_tools_translate_to_chat():
    tool = {"name": "look", "input_schema": {"type": "object"}}
    deferred = {"name": "later", "input_schema": {"type": "object"}, "defer_loading": True}
    messages = [{"role": "user", "content": "hi"}]
    assert _chat({"messages": messages, "tools": [tool, deferred]})["tools"] == [
        {"type": "function",
         "function": {"name": "look", "description": "", "parameters": {"type": "object"}}}
    ]  # fmt: skip
    choices = {
        "any": "required",
        "none": "none",
        "tool": {"type": "function", "function": {"name": "look"}},
    }
    for kind, expected in choices.items():
        choice = {"type": kind} | ({"name": "look"} if kind == "tool" else {})
        assert (
            _chat({"messages": messages, "tools": [tool], "tool_choice": choice})["tool_choice"]
            == expected
        )
    serial = _chat({"messages": messages, "tools": [tool],
                    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}})  # fmt: skip
    assert serial["parallel_tool_calls"] is False and "tool_choice" not in serial
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    structured = _chat(
        {
            "messages": messages,
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
        }
    )
    assert structured["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema}
    }  # fmt: skip


def test_a_deferred_tool_is_offered_once_a_tool_search_has_found_it():
    search = {"name": "ToolSearch", "input_schema": {"type": "object"}}
    deferred = {"name": "NotebookEdit", "input_schema": {"type": "object"}, "defer_loading": True}
    asked = {"role": "user", "content": "Edit the notebook"}
    offered = _chat({"messages": [asked], "tools": [search, deferred]})
    assert [t["function"]["name"] for t in offered["tools"]] == ["ToolSearch"]
    found = [
        asked,
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "s1", "name": "ToolSearch", "input": {"query": "notebook"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "s1",
             "content": [{"type": "tool_reference", "tool_name": "NotebookEdit"}]}]},
    ]  # fmt: skip
    chat = _chat({"messages": found, "tools": [search, deferred]})
    assert [t["function"]["name"] for t in chat["tools"]] == ["ToolSearch", "NotebookEdit"]
    assert chat["messages"][-1] == {
        "role": "tool", "tool_call_id": "s1", "content": "Tool found: NotebookEdit"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "'web_search_20250305'"),
        ({"messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                            "data": "JVBERi0="}}]}]}, "'base64' source"),
        ({"mcp_servers": [{"type": "url", "url": "https://example.com/mcp", "name": "x"}]},
         "mcp_servers"),
        ({"messages": [{"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]},
         "'server_tool_use'"),
    ],
)  # fmt: skip
def test_what_the_upstream_cannot_do_is_a_400_naming_it(body, named):
    with pytest.raises(ApiError) as refused:
        _chat({"messages": [{"role": "user", "content": "hi"}]} | body)
    assert refused.value.status == 400 and named in refused.value.detail


def test_a_refused_request_is_a_400_through_the_api_and_costs_nothing(console_url, api_key):
    client = _anthropic(console_url, api_key)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="mira", max_tokens=50, messages=[{"role": "user", "content": "Search the web"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )  # fmt: skip
    assert "web_search_20250305" in refused.value.message
    assert not usage_records().exists()


# --- the Responses API's newer shapes -----------------------------------------------


def _openai(console_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=console_url, api_key=key, max_retries=0)


def test_a_namespaced_function_is_called_by_name_and_namespace(console_url, api_key):
    client = _openai(console_url, api_key)
    response = client.responses.create(
        model="mira",
        input=[
            {"role": "developer", "content": "You manage agents."},
            {"role": "user", "content": "Use spawn_agent to start a helper called `scout`"},
        ],
        tools=[
            {"type": "function", "name": "get_goal", "parameters": {"type": "object"}},
            {"type": "namespace", "name": "agents", "description": "Agent tools", "tools": [
                {"type": "function", "name": "spawn_agent", "parameters": {
                    "type": "object", "properties": {"name": {"type": "string"}},
                    "required": ["name"]}},
            ]},
        ],
        reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"],
        store=False,
        prompt_cache_key="abc",
    )  # fmt: skip
    (call,) = response.output
    assert call.type == "function_call" and call.name == "spawn_agent"
    assert call.namespace == "agents"
    assert json.loads(call.arguments) == {"name": "scout"}


def test_a_thinking_model_reasons_visibly_in_the_stream(console_url, api_key):
    client = _openai(console_url, api_key)
    stream = client.responses.create(
        model="mira-thinking", input="Why is the sky blue?", stream=True,
        reasoning={"summary": "auto"}, include=["reasoning.encrypted_content"],
    )  # fmt: skip
    kinds, final = [], None
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.completed":
            final = event.response
    assert "response.reasoning_summary_text.delta" in kinds
    assert kinds.index("response.reasoning_summary_text.delta") < kinds.index(
        "response.output_text.delta"
    )
    reasoning, message = final.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert "sky blue" in reasoning.summary[0].text and message.type == "message"
    details = final.usage.output_tokens_details
    assert details.reasoning_tokens > 0
    record = usage_records().get()
    assert record.tokens_out == final.usage.output_tokens and record.product == "responses"


def test_a_conversation_goes_on_from_a_stored_response(console_url, api_key):
    client = _openai(console_url, api_key)
    first = client.responses.create(model="mira", input="Remember the word teapot.")
    second = client.responses.create(
        model="mira", input="What was the word?", previous_response_id=first.id
    )
    # The simulator says how many messages of context it answered from.
    assert "with 3 messages of context" in second.output_text
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="mira", input="Hi", previous_response_id="resp_unknown")
    assert "resp_unknown" in refused.value.message


@pytest.mark.parametrize("tool", ["web_search", "file_search", "code_interpreter", "mcp"])
def test_a_built_in_tool_is_a_400_naming_it_and_costs_nothing(console_url, api_key, tool):
    client = _openai(console_url, api_key)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="mira", input="Look it up", tools=[{"type": tool}])
    assert f"'tools[0]': '{tool}' is a built-in tool" in refused.value.message
    assert not usage_records().exists()


def test_a_caller_that_leaves_once_the_response_completed_is_booked_as_answered(
    console_url, api_key
):
    # Codex closes the connection as soon as `response.completed` arrives: the Responses
    # API sends nothing after it.
    body = {"model": "mira", "input": "reply with: Lighthouses guide ships home.", "stream": True}
    # Paced, as a real node's stream is, so that the caller leaves before the body ends.
    headers = {"Authorization": f"Bearer {api_key}", "x-sim-chunk-delay-ms": "50"}
    with httpx.stream("POST", f"{console_url}/responses", json=body, headers=headers) as reply:
        request_id = reply.headers["x-request-id"]
        for line in reply.iter_lines():
            if line.startswith("data: ") and '"response.completed"' in line:
                usage = json.loads(line[6:])["response"]["usage"]
                break
    assert wait_for(lambda: usage_records().filter(request_id=request_id).exists())
    record = charged(request_id)
    assert record.status == 200 and record.tokens_out == usage["output_tokens"] > 0


@pytest.mark.parametrize("model", ["mira-thinking", "mira"])
def test_a_thinking_model_holds_its_output_limit_twice(console_url, alice, model):
    # Its thinking is charged as output, beside the answer: a balance that covers the
    # prompt and one output limit, but not two, is enough for mira and not for
    # mira-thinking.
    limit = 1000
    once = pricing.worst_case("chat", model, 200, limit)
    twice = pricing.worst_case("chat", model, 200, 2 * limit)
    tight = Workspace.objects.create(name="Tight", slug="tight")
    ledger.grant(workspace=tight, amount=(once + twice) // 2, note="test", by=None)
    _key, secret = create_key(workspace=tight, name="k", created_by=alice)
    body = {"model": model, "max_tokens": limit,
            "messages": [{"role": "user", "content": "Why is the sky blue?"}]}  # fmt: skip
    answer = httpx.post(
        f"{console_url}/chat/completions", json=body,
        headers={"Authorization": f"Bearer {secret}"}, timeout=30,
    )  # fmt: skip
    assert answer.status_code == (402 if model == "mira-thinking" else 200), answer.text
