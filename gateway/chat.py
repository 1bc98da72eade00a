"""POST /v1/chat/completions: OpenAI-compatible chat, streamed or not."""

from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway import pipeline
from gateway.catalog import output_limit
from gateway.http import MAX_OUTPUT_TOKENS, endpoint, json_body, validate
from gateway.relay import Relay, Translator, open_stream
from upstream.errors import UpstreamError
from upstream.fleet import UpstreamResponse, get_fleet
from upstream.tokens import count_tokens

PATH = "/v1/chat/completions"
_PART_TYPES = {"text", "image_url", "input_audio", "file"}
# Each choice may write the whole limit, and the call holds for all of them.
MAX_CHOICES = 8


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def parts_have_known_types(cls, value):
        if isinstance(value, list):
            for index, part in enumerate(value):
                if part.get("type") not in _PART_TYPES:
                    raise ValueError(
                        f"part {index} has type {part.get('type')!r}; use text or image_url"
                    )
                if part["type"] == "text" and not isinstance(part.get("text"), str):
                    raise ValueError(f"part {index} is text, and its 'text' must be a string")
        return value


class ChatCompletionRequest(BaseModel):
    """The fields the gateway checks; any other field is passed to the upstream as sent."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=128)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None


def prompt_tokens(messages: list[dict]) -> int:
    """The prompt's tokens as Mira counts them: text, 4 per message, 85 per image, 2 to prime."""
    total = 2
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else []
        images = sum(1 for p in parts if isinstance(p, dict) and p.get("type") == "image_url")
        total += count_tokens(message_text([message])) + 4 + 85 * images
    return total


def message_text(messages: list[dict]) -> str:
    """All the text in a list of chat messages, for estimating prompt tokens."""
    pieces = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, list):
            pieces.extend(
                p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
    return "\n".join(pieces)


async def limit_output(body: dict, *, model: str, asked: int | None) -> int:
    """The most tokens each choice may write (`output_limit`), set in the body's limit
    fields (`max_tokens` when it has none), so that the upstream writes no more than the
    call holds for, whichever field it reads."""
    limit = await output_limit(model, asked)
    fields = [
        name for name in ("max_completion_tokens", "max_tokens") if body.get(name) is not None
    ]
    for name in fields or ["max_tokens"]:
        body[name] = limit
    return limit


async def complete(call: pipeline.Call, body: dict) -> dict:
    """A non-streamed chat completion through the fleet, booked on `call`."""
    return (await forward(call, body)).json()


async def forward(call: pipeline.Call, body: dict) -> UpstreamResponse:
    """The upstream's answer to a chat completion, as it came, its usage noted on `call`."""
    try:
        response = await get_fleet().request(
            "POST", PATH, json=body, model=call.model, headers=call.upstream_headers
        )
    except UpstreamError as exc:
        raise call.failed(exc) from None
    call.node, call.status = response.node, response.status
    call.first_byte()
    usage = response.usage()
    call.tokens_in = usage.get("prompt_tokens", call.tokens_in)
    call.tokens_out = usage.get("completion_tokens", 0)
    return response


async def stream(call: pipeline.Call, body: dict, translator: Translator) -> HttpResponse:
    """Open the upstream stream (usage always requested) and relay it."""
    upstream_body = body | {
        "stream": True,
        "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
    }
    upstream = get_fleet().stream(
        "POST", PATH, json=upstream_body, model=call.model, headers=call.upstream_headers
    )
    opening = await open_stream(call, upstream)
    return Relay(call, upstream, translator, opening).response()


@endpoint("POST")
async def chat_completions(request: HttpRequest) -> HttpResponse:
    body = json_body(request)
    spec = validate(ChatCompletionRequest, body)
    asked = spec.max_completion_tokens or spec.max_tokens
    limit = await limit_output(body, model=spec.model, asked=asked)
    call = await pipeline.start(
        request.caller, request_id=request.request_id, product="chat", endpoint=PATH,
        model=spec.model, stream=spec.stream, request=request,
        tokens_in=prompt_tokens(body["messages"]), max_tokens=limit, choices=spec.n,
    )  # fmt: skip
    if spec.stream:
        include_usage = bool((spec.stream_options or {}).get("include_usage"))
        return await stream(call, body, Translator(include_usage=include_usage))
    try:
        response = await forward(call, body)
    finally:
        await call.finish()
    # The upstream's bytes as they came.
    return HttpResponse(response.content, content_type="application/json")
