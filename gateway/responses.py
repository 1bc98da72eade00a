"""POST /v1/responses: the Responses API, streamed or not.

The request goes upstream as the caller sent it, in every shape the API has today
(flat function tools, namespaces of them, custom tools, developer messages, reasoning,
include, store, previous_response_id), and its events come back as the upstream sends
them. A built-in tool (web search, file search, a computer...) is refused here, by
name: the upstream runs no tools of its own, and an answer that silently went without
one would be a wrong one.
"""

import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway import pipeline
from gateway.catalog import held_output, output_limit
from gateway.errors import ApiError
from gateway.http import (
    MAX_OUTPUT_TOKENS,
    MODEL_CALL_ERRORS,
    Operation,
    endpoint,
    json_body,
    validate,
)
from gateway.relay import Translator, relay, sse
from upstream.sse import Chunk
from upstream.tokens import count_tokens

PATH = "/v1/responses"


# The tool types a caller may offer: functions (the upstream answers with calls to them).
TOOL_TYPES = ("function", "custom", "namespace")


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=128)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    include: list[str] | None = None
    store: bool | None = None
    previous_response_id: str | None = Field(default=None, max_length=128)


def check_tools(spec: ResponsesRequest) -> None:
    """400, naming the tool, for a tool the upstream cannot call."""
    for index, tool in enumerate(spec.tools or ()):
        kind = tool.get("type")
        if kind not in TOOL_TYPES:
            raise ApiError(
                400,
                f"Unsupported 'tools[{index}]': {kind!r} is a built-in tool, which the upstream "
                'does not have; offer function tools only (Codex: set web_search = "disabled").',
                code="unsupported_tool",
            )


def prompt_tokens(spec: ResponsesRequest) -> int:
    """The prompt's tokens as Mira counts them, or more: the text (a list of items counted as
    its JSON), 4 per turn, 85 per image, 2 to prime."""
    items = [spec.input] if isinstance(spec.input, str) else spec.input
    text = spec.input if isinstance(spec.input, str) else json.dumps(spec.input)
    images = 0
    for item in items:
        parts = item.get("content") if isinstance(item, dict) else None
        if isinstance(parts, list):
            images += sum(
                1
                for part in parts
                if isinstance(part, dict) and part.get("type") in ("input_image", "image_url")
            )
    turns = len(items) + (1 if spec.instructions else 0)
    instructions = count_tokens(spec.instructions) if spec.instructions else 0
    tools = count_tokens(json.dumps(spec.tools)) if spec.tools else 0
    return instructions + tools + count_tokens(text) + 4 * turns + 85 * images + 2


# The events that carry what the model wrote, counted when a stream ends before its usage.
_WRITTEN = frozenset(
    f"response.{kind}.delta"
    for kind in (
        "output_text", "function_call_arguments", "custom_tool_call_input",
        "reasoning_summary_text", "reasoning_text",
    )
)  # fmt: skip


# The events that end a response's stream: nothing follows them.
_LAST_EVENTS = frozenset(("response.completed", "response.incomplete", "response.failed"))


class ResponsesTranslator(Translator):
    """Relays Responses API events; usage comes in the `response.completed` event."""

    def chunk(self, chunk: Chunk) -> list[bytes]:
        data = chunk.data
        kind = data.get("type", "")
        if kind in _WRITTEN:
            self.text.append(data.get("delta", ""))
        usage = (data.get("response") or {}).get("usage")
        if usage:
            self.usage = usage
        if kind in _LAST_EVENTS:
            self.finished = True
        return [sse(data, event=kind or None)]

    def count(self, call: pipeline.Call) -> None:
        if self.usage:
            count_usage(call, self.usage)
        else:
            super().count(call)

    def end(self) -> list[bytes]:
        return []


def count_usage(call: pipeline.Call, usage: dict) -> None:
    call.tokens_in = usage.get("input_tokens", call.tokens_in)
    call.tokens_out = usage.get("output_tokens", 0)


@endpoint("POST")
async def responses(request: HttpRequest) -> HttpResponse:
    body = json_body(request)
    spec = validate(ResponsesRequest, body)
    check_tools(spec)
    # Sent upstream as held for: the caller's limit (clamped to the model's) or the default.
    body["max_output_tokens"] = limit = await output_limit(spec.model, spec.max_output_tokens)
    call = await pipeline.start(
        request.caller, request_id=request.request_id, product="responses", endpoint=PATH,
        model=spec.model, stream=spec.stream, request=request,
        tokens_in=prompt_tokens(spec), max_tokens=held_output(spec.model, limit),
    )  # fmt: skip
    if spec.stream:
        translator = ResponsesTranslator(include_usage=True)
        return (await relay(call, PATH, body, translator)).response()
    async with call:
        response = await call.forward(PATH, body)
        count_usage(call, response.usage())
    return HttpResponse(response.content, content_type="application/json")


SCHEMAS = {
    "Response": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "status": {"type": "string"},
            "output": {"type": "array"},
            "usage": {
                "type": ["object", "null"],
                "properties": {
                    "input_tokens": {"type": "integer"},
                    "output_tokens": {"type": "integer"},
                },
            },
        },
        "required": ["id", "object", "status", "output"],
    },
}

OPERATIONS = [
    Operation(
        "/v1/responses", "post", "Responses API", MODEL_CALL_ERRORS, "Response",
        request=ResponsesRequest, streams=True,
        example={"model": "mira", "input": "Hello", "max_output_tokens": 16},
        view=responses, name="responses",
    ),
]  # fmt: skip
