"""POST /v1/embeddings."""

from typing import Literal

from django.http import HttpRequest, HttpResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway import pipeline
from gateway.http import endpoint, json_body, validate
from upstream.errors import UpstreamError
from upstream.fleet import get_fleet
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
    try:
        try:
            response = await get_fleet().request(
                "POST", PATH, json=body, model=spec.model, headers=call.upstream_headers
            )
        except UpstreamError as exc:
            raise call.failed(exc) from None
        call.node, call.status = response.node, response.status
        data = response.json()
        call.tokens_in = (data.get("usage") or {}).get("prompt_tokens", call.tokens_in)
    finally:
        await call.finish()
    return HttpResponse(response.content, content_type="application/json")
