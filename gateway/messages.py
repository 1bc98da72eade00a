"""POST /v1/messages: Anthropic's Messages API, translated to and from upstream chat.

Requests become chat completions: system prompts (top-level or as `system` messages
among the turns) as system messages, image blocks as image_url parts, text documents
as text, tools as functions, tool results as tool messages. Fields the upstream has
no equivalent for are accepted and dropped (README, "The Anthropic Messages API");
what it cannot do at all (a PDF, a server tool) is a 400 naming it. Answers come back
as Anthropic messages, and streams as Anthropic's event sequence: message_start,
content_block_start/delta/stop per block (thinking, text, tool_use), message_delta
with the stop reason and usage, message_stop.
"""

import base64
import hashlib
import json
import uuid
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse, JsonResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway import chat, pipeline
from gateway.errors import ApiError
from gateway.http import (
    MAX_OUTPUT_TOKENS,
    MODEL_CALL_ERRORS,
    STRING_OR_NULL,
    Operation,
    endpoint,
    json_body,
    validate,
)
from gateway.relay import Translator, sse
from upstream.sse import Chunk
from upstream.tokens import count_tokens

PATH = "/v1/messages"
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


class AnthropicMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    # `system` among the turns is how some clients (Claude Code) send instructions that
    # change mid-conversation.
    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]]


class Thinking(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=0)
    display: Literal["summarized", "omitted"] | None = None


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=128)
    max_tokens: int = Field(ge=1, le=MAX_OUTPUT_TOKENS)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=MAX_OUTPUT_TOKENS)
    stop_sequences: list[str] | None = None
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    metadata: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
    output_format: dict[str, Any] | None = None
    context_management: dict[str, Any] | None = None
    mcp_servers: list[dict[str, Any]] | None = None
    service_tier: str | None = None
    container: str | dict[str, Any] | None = None


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, code="invalid_request")


def _text_of(blocks: Any) -> str:
    """The text of a string or of a list of content blocks (anything else has none)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        return ""
    return "".join(
        b["text"]
        for b in blocks
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )


def _image_url(block: dict, where: str) -> str:
    source = block.get("source")
    if not isinstance(source, dict):
        source = {}
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url":
        return source.get("url", "")
    raise _invalid(f"Invalid '{where}': an image's source.type must be base64 or url.")


def _document_text(block: dict, where: str) -> str:
    """A document block as text: plain-text and content-block documents have it; a PDF
    or a file would need reading that the upstream does not do."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"Invalid '{where}': a document needs a source.")
    kind = source.get("type")
    if kind == "text":
        text = source.get("data", "")
    elif kind == "content":
        text = _text_of(source.get("content"))
    else:
        raise _invalid(
            f"Unsupported '{where}': a document with a {kind!r} source (a PDF or a file) "
            "cannot be read by the upstream; send its text as a text document."
        )
    title = block.get("title")
    return f"{title}\n\n{text}" if isinstance(title, str) and title else str(text)


def _parts(blocks: list, where: str) -> list[dict]:
    """Text, image and document blocks (of a user turn or a tool result) as chat parts."""
    parts: list[dict] = []
    for position, block in enumerate(blocks):
        at = f"{where}.{position}"
        if not isinstance(block, dict):
            raise _invalid(f"Invalid '{at}': a content block must be an object.")
        kind = block.get("type")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise _invalid(f"Invalid '{at}.text': must be a string.")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, at)}})
        elif kind == "document":
            parts.append({"type": "text", "text": _document_text(block, at)})
        elif kind == "tool_reference":
            # A tool search's result: the tool it found is offered from now on (_tools).
            parts.append({"type": "text", "text": f"Tool found: {block.get('tool_name', '')}"})
        elif kind == "search_result":
            text = f"{block.get('title', '')} ({block.get('source', '')})\n" + _text_of(
                block.get("content")
            )
            parts.append({"type": "text", "text": text})
        else:
            raise _invalid(f"Unsupported content block type {kind!r} at '{at}'.")
    return parts


def _user_message(parts: list[dict]) -> dict:
    if all(p["type"] == "text" for p in parts):
        return {"role": "user", "content": "\n".join(p["text"] for p in parts)}
    return {"role": "user", "content": parts}


def _user_messages(content: str | list[dict], where: str) -> list[dict]:
    """One Anthropic user turn as chat messages: tool results first (as tool messages,
    any images they hold in a user message after them), then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict] = []
    images: list[dict] = []
    rest: list[dict] = []
    for position, block in enumerate(content):
        if isinstance(block, dict) and block.get("type") == "tool_result":
            result = block.get("content", "")
            at = f"{where}.{position}.content"
            parts = _parts(result, at) if isinstance(result, list) else []
            text = (
                result
                if isinstance(result, str)
                else "\n".join(p["text"] for p in parts if p["type"] == "text")
            )
            images += [p for p in parts if p["type"] != "text"]
            if block.get("is_error"):
                text = f"Error: {text}"
            out.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}
            )
        else:
            rest.append(block)
    parts = images + _parts(rest, where)
    if parts:
        out.append(_user_message(parts))
    return out


# Blocks an assistant turn may hold that the upstream cannot take back: its reasoning
# (only the model that wrote it can read a signature) is left out.
_DROPPED_ASSISTANT_BLOCKS = ("thinking", "redacted_thinking")


def _assistant_message(content: str | list[dict], where: str) -> dict:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict] = []
    for position, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input", {}))
            function = {"name": block.get("name", ""), "arguments": arguments}
            calls.append({"id": block.get("id", ""), "type": "function", "function": function})
        elif kind not in _DROPPED_ASSISTANT_BLOCKS:
            raise _invalid(f"Unsupported content block type {kind!r} at '{where}.{position}'.")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _found_tools(spec: MessagesRequest) -> set[str]:
    """The tools that a tool search has found so far in the conversation: the names of
    the `tool_reference` blocks in its tool results."""
    found = set()
    for message in spec.messages:
        if message.role != "user" or isinstance(message.content, str):
            continue
        for block in message.content:
            result = block.get("content") if block.get("type") == "tool_result" else None
            for part in result if isinstance(result, list) else ():
                if isinstance(part, dict) and part.get("type") == "tool_reference":
                    found.add(part.get("tool_name"))
    return found


def _tools(spec: MessagesRequest) -> list[dict]:
    """Client tools as functions. A server tool (one with a dated `type`, run by
    Anthropic's servers) is refused by name: the upstream runs no tools. A tool loaded
    only when a tool search finds it (`defer_loading`) is offered once a tool result of
    the conversation has referred to it, as Anthropic's API does."""
    found = _found_tools(spec) if spec.tools else set()
    functions = []
    for index, tool in enumerate(spec.tools or ()):
        kind = tool.get("type", "custom")
        if kind != "custom":
            raise _invalid(
                f"Unsupported 'tools.{index}': {kind!r} is a server tool, which the upstream "
                "does not have; define it as a client tool (with an input_schema) instead."
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _invalid(f"Invalid 'tools.{index}.name': a tool needs a name.")
        if tool.get("defer_loading") and tool["name"] not in found:
            continue
        function = {
            "name": tool["name"],
            "description": tool.get("description", ""),
            "parameters": tool.get("input_schema", {"type": "object"}),
        }
        functions.append({"type": "function", "function": function})
    return functions


def _response_format(spec: MessagesRequest) -> dict | None:
    """Structured output (`output_config.format`, or the beta's `output_format`) as the
    upstream's JSON schema response format."""
    fmt = (spec.output_config or {}).get("format") or spec.output_format
    if not fmt:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise _invalid("Invalid 'output_config.format': only type json_schema is supported.")
    schema = fmt.get("schema") or {"type": "object"}
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def to_chat(spec: MessagesRequest) -> dict:
    """The upstream chat completion request for an Anthropic messages request."""
    if spec.mcp_servers:
        raise _invalid(
            "Unsupported 'mcp_servers': the upstream does not call MCP servers; "
            "connect them in the client instead."
        )
    messages: list[dict] = []
    if spec.system:
        messages.append({"role": "system", "content": _text_of(spec.system)})
    for index, message in enumerate(spec.messages):
        where = f"messages.{index}.content"
        if message.role == "user":
            messages.extend(_user_messages(message.content, where))
        elif message.role == "system":
            messages.append({"role": "system", "content": _text_of(message.content)})
        else:
            messages.append(_assistant_message(message.content, where))
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": messages,
        "max_tokens": spec.max_tokens,
    }
    if spec.temperature is not None:
        body["temperature"] = spec.temperature
    if spec.top_p is not None:
        body["top_p"] = spec.top_p
    if spec.stop_sequences:
        body["stop"] = spec.stop_sequences
    response_format = _response_format(spec)
    if response_format:
        body["response_format"] = response_format
    tools = _tools(spec)
    if tools:
        body["tools"] = tools
        choice = spec.tool_choice
        if choice is not None:
            if choice.type == "any":
                body["tool_choice"] = "required"
            elif choice.type == "tool":
                body["tool_choice"] = {"type": "function", "function": {"name": choice.name or ""}}
            elif choice.type == "none":
                body["tool_choice"] = "none"
            if choice.disable_parallel_tool_use:
                body["parallel_tool_calls"] = False
    return body


def _shows_thinking(spec: MessagesRequest) -> bool:
    """Whether the caller asked to see the model's thinking (a model that thinks anyway
    keeps it to itself otherwise, as Anthropic's do)."""
    return spec.thinking is not None and spec.thinking.type != "disabled"


def _thinking_block(spec: MessagesRequest, thinking: str) -> dict:
    """A thinking block; its signature lets a client check the block came back unchanged
    (it is a digest here: the upstream takes no thinking back). With display "omitted"
    the text is left out."""
    signature = base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()
    shown = "" if spec.thinking and spec.thinking.display == "omitted" else thinking
    return {"type": "thinking", "thinking": shown, "signature": signature}


def _usage(input_tokens: int, output_tokens: int) -> dict:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    }


def from_chat(data: dict, spec: MessagesRequest) -> dict:
    """An Anthropic message for an upstream chat completion."""
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict] = []
    if message.get("thinking") and _shows_thinking(spec):
        content.append(_thinking_block(spec, message["thinking"]))
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for tool_call in message.get("tool_calls") or ():
        function = tool_call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {"raw": function.get("arguments")}
        content.append(
            {
                "type": "tool_use",
                "id": tool_call.get("id", ""),
                "name": function.get("name", ""),
                "input": arguments,
            }
        )
    usage = data.get("usage") or {}
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": spec.model,
        "content": content,
        "stop_reason": _STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": _usage(
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0) + usage.get("thinking_tokens", 0),
        ),
    }


class MessagesTranslator(Translator):
    """Upstream chat chunks in, Anthropic stream events out."""

    def __init__(self, spec: MessagesRequest, *, input_tokens: int) -> None:
        super().__init__(include_usage=False)
        self.spec = spec
        self.show_thinking = _shows_thinking(spec)
        self.input_tokens = input_tokens
        self.block = -1
        self.block_kind = ""
        self.thinking: list[str] = []
        self.tool_ids: dict[int, int] = {}
        self.finish_reason: str | None = None

    def start(self) -> list[bytes]:
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": self.spec.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(self.input_tokens, 0),
        }
        return [
            sse({"type": "message_start", "message": message}, "message_start"),
            sse({"type": "ping"}, "ping"),
        ]

    def _open(self, kind: str, block: dict) -> list[bytes]:
        events = self._close()
        self.block += 1
        self.block_kind = kind
        events.append(
            sse(
                {"type": "content_block_start", "index": self.block, "content_block": block},
                "content_block_start",
            )
        )
        return events

    def _delta(self, index: int, delta: dict) -> bytes:
        return sse(
            {"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta"
        )

    def _close(self) -> list[bytes]:
        if not self.block_kind:
            return []
        events = []
        if self.block_kind == "thinking":
            # The signature closes a thinking block, as Anthropic's streams do.
            signature = _thinking_block(self.spec, "".join(self.thinking))["signature"]
            events.append(
                self._delta(self.block, {"type": "signature_delta", "signature": signature})
            )
        self.block_kind = ""
        events.append(
            sse({"type": "content_block_stop", "index": self.block}, "content_block_stop")
        )
        return events

    def chunk(self, chunk: Chunk) -> list[bytes]:
        data = chunk.data
        if data.get("usage"):
            self.usage = data["usage"]
        events: list[bytes] = []
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            thinking = delta.get("thinking")
            if thinking:
                self.thinking.append(thinking)
                if self.show_thinking:
                    if self.block_kind != "thinking":
                        block = {"type": "thinking", "thinking": "", "signature": ""}
                        events += self._open("thinking", block)
                    if self.spec.thinking.display != "omitted":
                        events.append(
                            self._delta(
                                self.block, {"type": "thinking_delta", "thinking": thinking}
                            )
                        )
            text = delta.get("content")
            if text:
                self.text.append(text)
                if self.block_kind != "text":
                    events += self._open("text", {"type": "text", "text": ""})
                events.append(self._delta(self.block, {"type": "text_delta", "text": text}))
            for tool_call in delta.get("tool_calls") or ():
                position = tool_call.get("index", 0)
                function = tool_call.get("function") or {}
                if position not in self.tool_ids:
                    block = {
                        "type": "tool_use",
                        "id": tool_call.get("id", ""),
                        "name": function.get("name", ""),
                        "input": {},
                    }
                    events += self._open("tool_use", block)
                    self.tool_ids[position] = self.block
                if function.get("arguments"):
                    self.text.append(function["arguments"])
                    partial = {"type": "input_json_delta", "partial_json": function["arguments"]}
                    events.append(self._delta(self.tool_ids[position], partial))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def delivered_text(self) -> str:
        return "".join(self.thinking) + super().delivered_text()

    def end(self) -> list[bytes]:
        events = self._close()
        usage = self.usage or {}
        output_tokens = (
            usage.get("completion_tokens", 0) + usage.get("thinking_tokens", 0)
            if usage
            else count_tokens(self.delivered_text())
        )
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": _STOP_REASONS.get(self.finish_reason or "stop", "end_turn"),
                "stop_sequence": None,
            },
            "usage": _usage(usage.get("prompt_tokens", self.input_tokens), output_tokens),
        }
        return events + [sse(delta, "message_delta"), sse({"type": "message_stop"}, "message_stop")]

    def error(self, error: ApiError) -> list[bytes]:
        return [sse(error.body(anthropic=True), "error")]


@endpoint("POST")
async def messages(request: HttpRequest) -> HttpResponse:
    """POST /v1/messages (also with `?beta=true` and any `anthropic-beta` header, as
    Anthropic's SDKs send them: the betas' fields are accepted like the rest)."""
    body = json_body(request)
    spec = validate(MessagesRequest, body)
    upstream_body = to_chat(spec)
    call = await chat.start(
        request.caller, upstream_body, request_id=request.request_id, request=request,
        endpoint=PATH, asked=spec.max_tokens, stream=spec.stream,
    )  # fmt: skip
    if spec.stream:
        translator = MessagesTranslator(spec, input_tokens=call.tokens_in)
        return (await chat.stream(call, upstream_body, translator)).response()
    async with call:
        data = (await chat.complete(call, upstream_body)).json()
    return JsonResponse(from_chat(data, spec))


class CountTokensRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=128)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


@endpoint("POST")
async def count_message_tokens(request: HttpRequest) -> HttpResponse:
    """POST /v1/messages/count_tokens, as the Anthropic SDK calls it: the text of the
    system prompt, the turns (tool calls and results as their JSON) and the tools."""
    spec = validate(CountTokensRequest, json_body(request))
    pipeline.authorize(request.caller, scope="chat", model=spec.model)
    texts = [_text_of(spec.system or "")]
    for message in spec.messages:
        content = message.content
        texts.append(content if isinstance(content, str) else json.dumps(content))
    texts += [json.dumps(tool) for tool in spec.tools or ()]
    return JsonResponse({"input_tokens": sum(count_tokens(t) for t in texts if t)})


SCHEMAS = {
    "Message": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "content": {"type": "array", "items": {"type": "object"}},
            "stop_reason": STRING_OR_NULL,
            "usage": {
                "type": "object",
                "properties": {
                    "input_tokens": {"type": "integer"},
                    "output_tokens": {"type": "integer"},
                    "cache_creation_input_tokens": {"type": "integer"},
                    "cache_read_input_tokens": {"type": "integer"},
                },
                "required": ["input_tokens", "output_tokens"],
            },
        },
        "required": ["id", "type", "role", "content", "usage"],
    },
    "MessageTokenCount": {
        "type": "object",
        "properties": {"input_tokens": {"type": "integer"}},
        "required": ["input_tokens"],
    },
}

OPERATIONS = [
    Operation(
        "/v1/messages", "post", "Messages (Anthropic-compatible)", MODEL_CALL_ERRORS, "Message",
        request=MessagesRequest, example=chat.CHAT_EXAMPLE | {"max_tokens": 16}, streams=True,
        anthropic=True,
        view=messages, name="messages",
    ),
    Operation(
        "/v1/messages/count_tokens", "post", "Count the tokens of a messages request",
        (400, 401, 403, 413), "MessageTokenCount", request=CountTokensRequest,
        example=chat.CHAT_EXAMPLE, anthropic=True,
        view=count_message_tokens, name="messages_count_tokens",
    ),
]  # fmt: skip
