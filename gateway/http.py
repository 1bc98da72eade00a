"""Request-side helpers for /v1 views: the endpoint decorator, JSON bodies and schemas."""

import json
from collections.abc import Awaitable, Callable
from functools import wraps

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from pydantic import BaseModel, ValidationError

from gateway.errors import ApiError
from gateway.pipeline import authenticate

View = Callable[..., Awaitable[HttpResponse]]


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
                request.caller = await authenticate(request)
            return await view(request, *args, **kwargs)

        return wrapper

    return decorator


def json_body(request: HttpRequest) -> dict:
    """The request's JSON object; 413 when too large, 400 when not a JSON object."""
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    if length > settings.GATEWAY_MAX_JSON_BYTES:
        raise _too_large()
    try:
        raw = request.body
    except RequestDataTooBig:
        raise _too_large() from None
    if len(raw) > settings.GATEWAY_MAX_JSON_BYTES:
        raise _too_large()
    if not raw:
        raise ApiError(400, "The request body is empty; send a JSON object.", code="empty_body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            400, f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def _too_large() -> ApiError:
    limit_mb = settings.GATEWAY_MAX_JSON_BYTES / (1024 * 1024)
    return ApiError(
        413, f"Request body too large: the limit is {limit_mb:g} MiB.", code="body_too_large"
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
