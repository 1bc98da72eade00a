"""POST /v1/embeddings."""

from typing import Literal

from django.http import HttpRequest, HttpResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway import pipeline
from gateway.http import MODEL_CALL_ERRORS, Operation, endpoint, json_body, validate
from upstream.tokens import count_tokens

PATH = "/v1/embeddings"


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=128)
    input: str | list[str] = Field(min_length=1)
    dimensions: int | None = Field(default=None, ge=1, le=8192)
    encoding_format: Literal["float", "base64"] | None = None


@endpoint("POST")
async def embeddings(request: HttpRequest) -> HttpResponse:
    body = json_body(request)
    spec = validate(EmbeddingsRequest, body)
    texts = [spec.input] if isinstance(spec.input, str) else spec.input
    call = await pipeline.start(
        request.caller, request_id=request.request_id, product="embeddings", endpoint=PATH,
        model=spec.model, request=request, tokens_in=sum(count_tokens(t) for t in texts),
    )  # fmt: skip
    async with call:
        response = await call.forward(PATH, body)
        call.tokens_in = response.usage().get("prompt_tokens", call.tokens_in)
    return HttpResponse(response.content, content_type="application/json")


SCHEMAS = {
    "EmbeddingList": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "embedding": {"type": ["array", "string"]},
                    },
                    "required": ["index", "embedding"],
                },
            },
            "usage": {"type": "object"},
        },
        "required": ["object", "data"],
    },
}

OPERATIONS = [
    Operation(
        "/v1/embeddings", "post", "Text embeddings", MODEL_CALL_ERRORS, "EmbeddingList",
        request=EmbeddingsRequest, example={"model": "mira-embed", "input": "Hello"},
        view=embeddings, name="embeddings",
    ),
]  # fmt: skip
