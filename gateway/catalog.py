"""GET /v1/models: the fleet's models, with `provider/model` ids for provider groups."""

import time

from django.http import HttpRequest, HttpResponse, JsonResponse

from gateway.http import endpoint
from gateway.pipeline import Caller
from upstream.errors import UpstreamError
from upstream.fleet import get_fleet

_CACHE_SECONDS = 30.0
_cache: dict[str, tuple[float, list[dict]]] = {}


async def fleet_models() -> list[dict]:
    """Every model the fleet serves (cached briefly), bare ids first."""
    fleet = get_fleet()
    cached = _cache.get("models")
    if cached and time.monotonic() - cached[0] < _CACHE_SECONDS:
        return cached[1]
    try:
        response = await fleet.request("GET", "/v1/models")
    except UpstreamError:
        if cached:
            return cached[1]
        raise
    models = [m for m in response.json().get("data", []) if isinstance(m, dict) and m.get("id")]
    providers = sorted({node.config.provider for node in fleet.nodes if node.config.provider})
    grouped = [m | {"id": f"{provider}/{m['id']}"} for provider in providers for m in models]
    result = models + grouped
    _cache["models"] = (time.monotonic(), result)
    return result


def visible_to(caller: Caller, models: list[dict]) -> list[dict]:
    if caller.key is None or not caller.key.models:
        return models
    return [m for m in models if caller.key.allows_model(m["id"])]


@endpoint("GET")
async def models(request: HttpRequest) -> HttpResponse:
    try:
        data = await fleet_models()
    except UpstreamError as exc:
        from gateway.pipeline import upstream_error

        raise upstream_error(exc) from None
    return JsonResponse({"object": "list", "data": visible_to(request.caller, data)})
