"""POST /v1/extras/token-count: count tokens without a model call (free, not metered)."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.http import UPSTREAM_ERRORS, Operation, endpoint, json_body, validate
from gateway.pipeline import authorize, upstream_error
from upstream.errors import UpstreamError
from upstream.fleet import get_fleet

PATH = "/v1/extras/token-count"


class TokenCountRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(default="mira", min_length=1, max_length=128)
    text: str | list[str] | None = None
    input: str | list[str] | None = None
    messages: list[dict] | None = None

    @model_validator(mode="after")
    def has_something_to_count(self):
        if self.text is None and self.input is None and self.messages is None:
            raise ValueError("send 'text' (or 'input', or 'messages') to count")
        return self


@endpoint("POST")
async def token_count(request: HttpRequest) -> HttpResponse:
    body = json_body(request)
    spec = validate(TokenCountRequest, body)
    authorize(request.caller, scope="chat", model=spec.model)
    try:
        # A field sent as null is a field not sent (the node reads whichever is present).
        present = {name: value for name, value in body.items() if value is not None}
        response = await get_fleet().request("POST", PATH, json=present, model=spec.model)
    except UpstreamError as exc:
        raise upstream_error(exc) from None
    return JsonResponse(response.json())


SCHEMAS = {
    "TokenCount": {
        "type": "object",
        "properties": {"tokens": {"type": "integer"}},
        "required": ["tokens"],
    },
}

OPERATIONS = [
    Operation(
        "/v1/extras/token-count", "post", "Count tokens without a model call",
        (400, 401, 403, 413, *UPSTREAM_ERRORS), "TokenCount", request=TokenCountRequest,
        example={"model": "mira", "text": "Hello"},
        view=token_count, name="token_count",
    ),
]  # fmt: skip
