"""POST /v1/messages: Anthropic's Messages API, translated to and from upstream chat.

Requests become chat completions (system prompt first, image blocks as image_url
parts, tools as functions, tool results as tool messages); answers come back as
Anthropic messages, and streams as Anthropic's event sequence: message_start,
content_block_start/delta/stop per block, message_delta with the stop reason and
usage, message_stop.
"""

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

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


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
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


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


def _image_url(block: dict) -> str:
    source = block.get("source")
    if not isinstance(source, dict):
        source = {}
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url":
        return source.get("url", "")
    raise ApiError(
        400, "Invalid image block: source.type must be base64 or url.", code="invalid_request"
    )


def _user_messages(content: str | list[dict]) -> list[dict]:
    """One Anthropic user turn as chat messages: tool results first, then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict] = []
    parts: list[dict] = []
    for block in content:
        kind = block.get("type")
        if kind == "tool_result":
            result = block.get("content", "")
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id", ""),
                    "content": _text_of(result),
                }
            )
        elif kind == "text":
            if not isinstance(block.get("text"), str):
                raise ApiError(
                    400, "Invalid text block: 'text' must be a string.", code="invalid_request"
                )
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block)}})
        else:
            raise ApiError(
                400,
                f"Unsupported content block type {kind!r} in a user message.",
                code="invalid_request",
            )
    if parts:
        simple = all(p["type"] == "text" for p in parts)
        out.append(
            {"role": "user", "content": "".join(p["text"] for p in parts) if simple else parts}
        )
    return out


def _assistant_message(content: str | list[dict]) -> dict:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    message: dict[str, Any] = {"role": "assistant", "content": _text_of(content) or None}
    calls = [
        {
            "id": b.get("id", ""),
            "type": "function",
            "function": {"name": b.get("name", ""), "arguments": json.dumps(b.get("input", {}))},
        }
        for b in content
        if b.get("type") == "tool_use"
    ]
    if calls:
        message["tool_calls"] = calls
    return message


def to_chat(spec: MessagesRequest) -> dict:
    """The upstream chat completion request for an Anthropic messages request."""
    messages: list[dict] = []
    if spec.system:
        messages.append({"role": "system", "content": _text_of(spec.system)})
    for message in spec.messages:
        if message.role == "user":
            messages.extend(_user_messages(message.content))
        else:
            messages.append(_assistant_message(message.content))
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
    if spec.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name", ""),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema", {"type": "object"}),
                },
            }
            for t in spec.tools
        ]
        choice = (spec.tool_choice or {}).get("type")
        if choice == "any":
            body["tool_choice"] = "required"
        elif choice == "tool":
            body["tool_choice"] = {
                "type": "function",
                "function": {"name": spec.tool_choice.get("name", "")},
            }
        elif choice == "none":
            body["tool_choice"] = "none"
    return body


def from_chat(data: dict, model: str) -> dict:
    """An Anthropic message for an upstream chat completion."""
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict] = []
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
        "model": model,
        "content": content,
        "stop_reason": _STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
    }


class MessagesTranslator(Translator):
    """Upstream chat chunks in, Anthropic stream events out."""

    def __init__(self, *, model: str, input_tokens: int) -> None:
        super().__init__(include_usage=False)
        self.model = model
        self.input_tokens = input_tokens
        self.block = -1
        self.block_kind = ""
        self.tool_ids: dict[int, int] = {}
        self.finish_reason: str | None = None

    def start(self) -> list[bytes]:
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
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

    def _close(self) -> list[bytes]:
        if not self.block_kind:
            return []
        self.block_kind = ""
        return [sse({"type": "content_block_stop", "index": self.block}, "content_block_stop")]

    def chunk(self, chunk: Chunk) -> list[bytes]:
        data = chunk.data
        if data.get("usage"):
            self.usage = data["usage"]
        events: list[bytes] = []
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                self.text.append(text)
                if self.block_kind != "text":
                    events += self._open("text", {"type": "text", "text": ""})
                delta_event = {
                    "type": "content_block_delta",
                    "index": self.block,
                    "delta": {"type": "text_delta", "text": text},
                }
                events.append(sse(delta_event, "content_block_delta"))
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
                    events.append(
                        sse(
                            {
                                "type": "content_block_delta",
                                "index": self.tool_ids[position],
                                "delta": partial,
                            },
                            "content_block_delta",
                        )
                    )
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def end(self) -> list[bytes]:
        events = self._close()
        output_tokens = (self.usage or {}).get("completion_tokens") or count_tokens(
            "".join(self.text)
        )
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": _STOP_REASONS.get(self.finish_reason or "stop", "end_turn"),
                "stop_sequence": None,
            },
            "usage": {"output_tokens": output_tokens},
        }
        return events + [sse(delta, "message_delta"), sse({"type": "message_stop"}, "message_stop")]

    def error(self, error: ApiError) -> list[bytes]:
        return [sse(error.body(anthropic=True), "error")]


@endpoint("POST")
async def messages(request: HttpRequest) -> HttpResponse:
    body = json_body(request)
    spec = validate(MessagesRequest, body)
    upstream_body = to_chat(spec)
    call = await chat.start(
        request.caller, upstream_body, request_id=request.request_id, request=request,
        endpoint=PATH, asked=spec.max_tokens, stream=spec.stream,
    )  # fmt: skip
    if spec.stream:
        translator = MessagesTranslator(model=spec.model, input_tokens=call.tokens_in)
        return (await chat.stream(call, upstream_body, translator)).response()
    async with call:
        data = (await chat.complete(call, upstream_body)).json()
    return JsonResponse(from_chat(data, spec.model))


class CountTokensRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=128)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None


@endpoint("POST")
async def count_message_tokens(request: HttpRequest) -> HttpResponse:
    """POST /v1/messages/count_tokens, as the Anthropic SDK calls it."""
    spec = validate(CountTokensRequest, json_body(request))
    pipeline.authorize(request.caller, scope="chat", model=spec.model)
    texts = [_text_of(spec.system or "")] + [_text_of(m.content) for m in spec.messages]
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
