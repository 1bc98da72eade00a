"""GET /v1/models: the fleet's models, with `provider/model` ids for provider groups."""

import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from gateway.http import UPSTREAM_ERRORS, Operation, endpoint
from gateway.pipeline import Caller, upstream_error
from upstream.errors import UpstreamError
from upstream.fleet import get_fleet

_CACHE_SECONDS = 30.0
# When the models were read, from which fleet, and the models.
_cache: dict[str, tuple[float, object, list[dict]]] = {}


async def fleet_models() -> list[dict]:
    """Every model the fleet serves (cached briefly), bare ids first."""
    fleet = get_fleet()
    cached = _cache.get("models")
    if cached and cached[1] is fleet and time.monotonic() - cached[0] < _CACHE_SECONDS:
        return cached[2]
    try:
        response = await fleet.request("GET", "/v1/models")
    except UpstreamError:
        if cached and cached[1] is fleet:
            return cached[2]
        raise
    models = [m for m in response.json().get("data", []) if isinstance(m, dict) and m.get("id")]
    providers = sorted({node.config.provider for node in fleet.nodes if node.config.provider})
    grouped = [m | {"id": f"{provider}/{m['id']}"} for provider in providers for m in models]
    result = models + grouped
    _cache["models"] = (time.monotonic(), fleet, result)
    return result


async def output_limit(model: str, asked: int | None) -> int:
    """The most output tokens a call may write (per choice), which its hold covers and
    which is sent upstream: what the caller asked for, else GATEWAY_DEFAULT_MAX_TOKENS,
    and no more than the model's own `max_output_tokens`, to which Mira clamps a larger
    request too. The model's limit is looked up only for a request above the default
    (the catalog costs an upstream call every half minute); when it cannot be read, the
    call holds for what was asked."""
    default = settings.GATEWAY_DEFAULT_MAX_TOKENS
    if asked is None or asked <= default:
        return asked or default
    try:
        models = await fleet_models()
    except UpstreamError:
        return asked
    for entry in models:
        if entry["id"] == model:
            most = entry.get("max_output_tokens")
            if type(most) is int and most > 0:
                return min(asked, most)
            break
    return asked


async def available_models() -> list[dict]:
    """`fleet_models()`, an upstream failure raised as the caller's error."""
    try:
        return await fleet_models()
    except UpstreamError as exc:
        raise upstream_error(exc) from None


def visible_to(caller: Caller, models: list[dict]) -> list[dict]:
    if caller.key is None or not caller.key.models:
        return models
    return [m for m in models if caller.key.allows_model(m["id"])]


@endpoint("GET")
async def models(request: HttpRequest) -> HttpResponse:
    data = await available_models()
    return JsonResponse({"object": "list", "data": visible_to(request.caller, data)})


SCHEMAS = {
    "ModelList": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "string"}},
                    "required": ["id"],
                },
            },
        },
        "required": ["object", "data"],
    },
}

OPERATIONS = [
    Operation(
        "/v1/models", "get", "List the models of the upstream fleet",
        (401, *UPSTREAM_ERRORS), "ModelList",
        view=models, name="models",
    ),
]  # fmt: skip
