"""POST /v1/chat/completions: OpenAI-compatible chat, streamed or not."""

from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway import pipeline
from gateway.catalog import held_output, output_limit
from gateway.http import (
    MAX_OUTPUT_TOKENS,
    MODEL_CALL_ERRORS,
    STRING_OR_NULL,
    Operation,
    endpoint,
    json_body,
    validate,
)
from gateway.relay import Relay, Translator, count_chat_usage, relay
from upstream.fleet import UpstreamResponse
from upstream.tokens import count_tokens

PATH = "/v1/chat/completions"
_PART_TYPES = {"text", "image_url", "input_audio", "file"}
# Each choice may write the whole limit, and the call holds for all of them.
MAX_CHOICES = 8
CHAT_EXAMPLE = {"model": "mira", "messages": [{"role": "user", "content": "Hello"}]}


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


def count(call: pipeline.Call, response: UpstreamResponse) -> None:
    """Note a completion's tokens on the call, from the answer's usage."""
    count_chat_usage(call, response.usage())


async def start(
    caller: pipeline.Caller,
    body: dict,
    *,
    request_id: str,
    request: HttpRequest | None = None,
    endpoint: str = PATH,
    asked: int | None = None,
    stream: bool = False,
) -> pipeline.Call:
    """Start a chat call for `body` (checked already): the output limit is set in it, and
    the prompt and every token each choice may write (a thinking model's thinking too)
    are held."""
    limit = await limit_output(body, model=body["model"], asked=asked)
    return await pipeline.start(
        caller, request_id=request_id, product="chat", endpoint=endpoint, model=body["model"],
        stream=stream, request=request,
        tokens_in=prompt_tokens(body["messages"]), max_tokens=held_output(body["model"], limit),
        choices=body.get("n") or 1,
    )  # fmt: skip


async def complete(call: pipeline.Call, body: dict) -> UpstreamResponse:
    """A non-streamed chat completion, its tokens noted on `call`."""
    response = await call.forward(PATH, body)
    count(call, response)
    return response


async def stream(
    call: pipeline.Call, body: dict, translator: Translator, *, keepalive: bool = True
) -> Relay:
    """A streamed chat completion (usage always requested), opened, to relay."""
    upstream_body = body | {
        "stream": True,
        "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
    }
    return await relay(call, PATH, upstream_body, translator, keepalive=keepalive)


@endpoint("POST")
async def chat_completions(request: HttpRequest) -> HttpResponse:
    body = json_body(request)
    spec = validate(ChatCompletionRequest, body)
    call = await start(
        request.caller, body, request_id=request.request_id, request=request,
        asked=spec.max_completion_tokens or spec.max_tokens, stream=spec.stream,
    )  # fmt: skip
    if spec.stream:
        include_usage = bool((spec.stream_options or {}).get("include_usage"))
        return (await stream(call, body, Translator(include_usage=include_usage))).response()
    async with call:
        response = await complete(call, body)
    # The upstream's bytes as they came.
    return HttpResponse(response.content, content_type="application/json")


SCHEMAS = {
    "ChatCompletion": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {"type": "object"},
                        "finish_reason": STRING_OR_NULL,
                    },
                    "required": ["index", "message"],
                },
            },
            "usage": {
                "type": "object",
                "properties": {
                    "prompt_tokens": {"type": "integer"},
                    "completion_tokens": {"type": "integer"},
                },
                "required": ["prompt_tokens", "completion_tokens"],
            },
        },
        "required": ["id", "object", "model", "choices", "usage"],
    },
}

OPERATIONS = [
    Operation(
        "/v1/chat/completions", "post", "Chat completion (OpenAI-compatible)",
        MODEL_CALL_ERRORS, "ChatCompletion", request=ChatCompletionRequest,
        example=CHAT_EXAMPLE | {"max_tokens": 16}, streams=True,
        view=chat_completions, name="chat_completions",
    ),
]  # fmt: skip
