"""Request-side helpers for /v1 views: the endpoint decorator, JSON bodies and schemas.

Model aliases (console.aliases) are applied here, once for every product: `endpoint`
looks up those of the caller's workspace, and `json_body` replaces the body's `model`
by the model that serves it, before the view validates it, keeping the name asked for
as `request.model_asked` (booked with the call by gateway.pipeline).
"""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from pydantic import BaseModel, ValidationError

from console.aliases import resolve
from gateway.errors import ApiError, too_large
from gateway.pipeline import authenticate

View = Callable[..., Awaitable[HttpResponse]]

# Arrays and objects inside one another; what code downstream (the upstream's included)
# walks recursively stays far from Python's recursion limit.
MAX_JSON_DEPTH = 64
# The most output tokens any call may ask for (as Mira); a model's own limit is lower,
# and a call asking for more than that is clamped to it (gateway.catalog.output_limit).
MAX_OUTPUT_TOKENS = 1_000_000


# The errors an operation may give, for the OpenAPI document.
UPSTREAM_ERRORS = (502, 503, 504)
MODEL_CALL_ERRORS = (400, 401, 402, 403, 404, 413, 422, 429, *UPSTREAM_ERRORS)
ACCOUNT_ERRORS = (401, 403)
STRING_OR_NULL = {"type": ["string", "null"]}
INTEGER_OR_NULL = {"type": ["integer", "null"]}


@dataclass(frozen=True)
class Operation:
    """One method on one /v1 path: how it is routed (`view`, `name`) and described in
    the OpenAPI document. Each module in `gateway.products.MODULES` lists its own."""

    path: str  # with {name} for a path parameter, as OpenAPI writes it
    method: str
    summary: str
    errors: tuple[int, ...]
    success: str | dict | None = None  # the success body's schema (a component's name)
    status: int = 200
    request: type[BaseModel] | None = None
    example: dict | None = None
    streams: bool = False
    query: tuple[dict, ...] = ()
    anthropic: bool = False  # errors in Anthropic's envelope
    view: Callable | None = None
    name: str = ""
    content_type: str = "application/json"  # of the request body
    produces: tuple[str, ...] = ("application/json",)  # media types of the success body


def query_param(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


def list_of(name: str) -> dict:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}}


def endpoint(*methods: str, auth: bool = True) -> Callable[[View], View]:
    """Declare a /v1 view: the methods it answers and whether it needs a key."""

    def decorator(view: View) -> View:
        @wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                raise ApiError(
                    405,
                    f"{request.method} is not allowed on {request.path}; use {' or '.join(methods)}.",
                    code="method_not_allowed",
                    headers={"Allow": ", ".join(methods)},
                )
            if auth:
                caller = request.caller = await authenticate(request)
                if request.method == "POST":
                    # Imported here: the catalog's own view is declared with this module.
                    from gateway.catalog import aliases_for

                    request.aliases = await aliases_for(caller.workspace_id)
            return await view(request, *args, **kwargs)

        return wrapper

    return decorator


def json_body(request: HttpRequest, *, media: bool = False) -> dict:
    """The request's JSON object; 413 when too large, 400 when not a JSON object or nested
    deeper than MAX_JSON_DEPTH. With `media`, the body may carry files (as base64) and
    be as large as GATEWAY_MAX_MEDIA_JSON_BYTES."""
    limit = settings.GATEWAY_MAX_MEDIA_JSON_BYTES if media else settings.GATEWAY_MAX_JSON_BYTES
    try:
        raw = request.body
    except RequestDataTooBig:
        raise too_large(limit) from None
    if len(raw) > limit:
        raise too_large(limit)
    if not raw:
        raise ApiError(400, "The request body is empty; send a JSON object.", code="empty_body")
    try:
        body = json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            400, f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    # Only a body with more brackets than the limit can be nested deeper than it.
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and _deeper_than(body, MAX_JSON_DEPTH):
        raise _too_deep()
    aliases = getattr(request, "aliases", None)
    if aliases is not None:
        asked = body.get("model")
        if type(asked) is str:
            served = resolve(asked, *aliases)
            if served is not None:
                body["model"] = served
                request.model_asked = asked
    return body


def _deeper_than(value: dict | list, limit: int) -> bool:
    """Whether a parsed JSON value nests more than `limit` arrays and objects, level by level."""
    level = [value]
    for _ in range(limit):
        below = []
        for node in level:
            for item in node.values() if type(node) is dict else node:
                if type(item) is dict or type(item) is list:
                    below.append(item)
        if not below:
            return False
        level = below
    return True


def _too_deep() -> ApiError:
    return ApiError(
        400,
        f"The request body is nested too deeply: at most {MAX_JSON_DEPTH} levels of arrays and objects.",
        code="invalid_json",
    )


def validate[T: BaseModel](schema: type[T], body: dict) -> T:
    """Check a body against an endpoint's schema; 400 naming the first bad field."""
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise ApiError(400, describe(exc.errors()[0]), code="invalid_request") from None


def describe(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "missing":
        return f"The '{where}' field is required."
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"Invalid '{where}': {message}."
