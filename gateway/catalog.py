"""GET /v1/models: the fleet's models, with `provider/model` ids for provider groups,
and the model aliases (console.aliases) that apply to the caller's workspace."""

import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from console import aliases
from console.aliases import Aliases
from gateway.http import UPSTREAM_ERRORS, Operation, endpoint
from gateway.pipeline import Caller, upstream_error
from upstream.errors import UpstreamError
from upstream.fleet import Fleet, get_fleet

_CACHE_SECONDS = 30.0
# When the models were read, from which fleet, and the models.
_cache: dict[str, tuple[float, object, list[dict]]] = {}
# The ids of the last list of models read, and that list.
_ids: tuple[list[dict] | None, frozenset[str]] = (None, frozenset())
# The fleet file's aliases, ready to match, and the fleet they came with.
_fleet_aliases: tuple[Fleet | None, Aliases] = (None, aliases.NONE)


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


async def model_ids() -> frozenset[str]:
    """The ids of `fleet_models()`, as a set (built once per reading of the catalog)."""
    global _ids
    models = await fleet_models()
    if _ids[0] is not models:
        _ids = (models, frozenset(m["id"] for m in models))
    return _ids[1]


def fleet_aliases() -> Aliases:
    """The fleet file's aliases, for every workspace."""
    global _fleet_aliases
    fleet = get_fleet()
    if _fleet_aliases[0] is not fleet:
        _fleet_aliases = (fleet, Aliases.of(fleet.aliases))
    return _fleet_aliases[1]


async def aliases_for(workspace_id: int) -> tuple[tuple[Aliases, ...], frozenset[str]] | None:
    """What `console.aliases.resolve` needs for a call of this workspace: its aliases,
    then the fleet file's, and the fleet's own models (never aliased); None when there
    are no aliases at all, which costs no query and no upstream call."""
    own = aliases.fresh(workspace_id)
    if own is None:
        own = await aliases.for_workspace(workspace_id)
    shared = fleet_aliases()
    if not own and not shared:
        return None
    tables = (own, shared) if own and shared else (own or shared,)
    try:
        models = await model_ids()
    except UpstreamError:
        models = frozenset()  # the call itself will say that the upstream failed
    return tables, models


# Mira's models that think before they answer. Their thinking is written output, charged
# as output (usage.thinking_tokens), so a call to one holds its output limit twice: once
# for the thinking, once for the answer.
THINKING_MODELS = frozenset({"mira-thinking"})


def held_output(model: str, limit: int) -> int:
    """The output tokens a call holds for, per choice, given the limit sent upstream."""
    return 2 * limit if model.rsplit("/", 1)[-1] in THINKING_MODELS else limit


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
    return [m for m in models if caller.key.allows_model(m.get("alias_of") or m["id"])]


def alias_entries(tables: tuple[Aliases, ...], models: list[dict]) -> list[dict]:
    """The exact aliases as models (globs cannot be listed), each saying what it serves;
    not those that name a model of the fleet (never aliased) or a model it lacks."""
    served = {m["id"]: m for m in models}
    entries: dict[str, dict] = {}
    for table in tables:
        for name, target in sorted(table.exact.items()):
            if name in served or name in entries or target not in served:
                continue
            entries[name] = served[target] | {"id": name, "alias_of": target}
    return list(entries.values())


@endpoint("GET")
async def models(request: HttpRequest) -> HttpResponse:
    data = await available_models()
    applying = await aliases_for(request.caller.workspace_id)
    if applying is not None:
        data = data + alias_entries(applying[0], data)
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
                    "properties": {
                        "id": {"type": "string"},
                        "alias_of": {
                            "type": "string",
                            "description": "For a model alias: the model that serves it.",
                        },
                    },
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
