"""The account API (seed 002) for keys with the `admin` scope: keys, balance, transactions, usage.

Shapes follow Mira's account endpoints, with money named for the configured currency:
`*_micros` integers (1 unit = 1,000,000) and the same amount as a decimal string.
"""

import re
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, field_validator

from accounts.models import Membership
from console import actions, balances, db
from console.models import (
    ADMIN_SCOPE,
    PRODUCT_SCOPES,
    ApiKey,
    LedgerEntry,
    UsageRecord,
    UsageRollup,
)
from console.pricing import MICRO
from gateway.errors import ApiError
from gateway.http import (
    ACCOUNT_ERRORS,
    INTEGER_OR_NULL,
    STRING_OR_NULL,
    Operation,
    endpoint,
    json_body,
    list_of,
    query_param,
    validate,
)
from gateway.pipeline import Caller

_TRANSACTION_TYPES = ("grant", "charge", "refund", "hold", "release")
_GROUPS = {
    "day": "day",
    "model": "model",
    "product": "product",
    "source": "source",
    "key": "api_key_id",
}


def _require_admin(caller: Caller) -> None:
    if caller.key is None or not caller.key.allows_scope(ADMIN_SCOPE):
        raise ApiError(
            403,
            "This API key may not use the account API; create a key with the admin scope.",
            code="scope_not_allowed",
        )


def _decimal(micro: int) -> str:
    return str(
        (Decimal(abs(micro)) / MICRO).quantize(
            Decimal("0.01") if micro % 10_000 == 0 else Decimal("0.000001")
        )
    )


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _key_item(key: ApiKey, totals: dict) -> dict:
    requests, tokens = totals.get(key.pk, (0, 0))
    return {
        "id": str(key.pk),
        "name": key.name,
        "key_prefix": key.prefix,
        "last_four": key.last_four,
        "is_active": key.is_active,
        "status": key.status,
        "scopes": key.scopes,
        "allowed_models": key.allowed_models,
        "rpm_limit": key.rpm_limit,
        "tpm_limit": key.tpm_limit,
        "monthly_budget_micros": key.monthly_budget,
        "created_by_key": str(key.created_by_key_id) if key.created_by_key_id else None,
        "total_requests": requests,
        "total_tokens": tokens,
        "last_used_at": _when(key.last_used_at),
        "expires_at": _when(key.expires_at),
        "created_at": _when(key.created_at),
    }


def _key_totals(workspace_id: int) -> dict:
    rows = (
        UsageRollup.objects.filter(workspace_id=workspace_id, api_key__isnull=False)
        .values("api_key_id")
        .annotate(r=Sum("requests"), t=Sum("tokens_in") + Sum("tokens_out"))
    )
    return {row["api_key_id"]: (row["r"], row["t"]) for row in rows}


def _list_keys(workspace_id: int) -> list[dict]:
    keys = ApiKey.objects.filter(workspace_id=workspace_id).active()
    totals = _key_totals(workspace_id)
    return [_key_item(key, totals) for key in keys]


# What the Keys page accepts: limits a database integer holds everywhere, and a budget of
# up to twelve digits of whole currency units.
_MAX_LIMIT = 2**31 - 1
_MAX_BUDGET = 10**18 - 1
# The deepest page of transactions one may ask for.
_MAX_OFFSET = 1_000_000_000
_MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,19}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=128)
    scopes: list[str] | None = Field(default=None, max_length=len(PRODUCT_SCOPES) + 1)
    allowed_models: list[Annotated[str, Field(pattern=_MODEL_NAME)]] = Field(
        default_factory=list, max_length=100
    )
    rpm_limit: int | None = Field(default=None, ge=1, le=_MAX_LIMIT)
    tpm_limit: int | None = Field(default=None, ge=1, le=_MAX_LIMIT)
    monthly_budget_micros: int | None = Field(default=None, ge=0, le=_MAX_BUDGET)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)

    @field_validator("scopes")
    @classmethod
    def known_scopes(cls, value):
        if value is not None:
            unknown = sorted(set(value) - {*PRODUCT_SCOPES, ADMIN_SCOPE})
            if unknown:
                raise ValueError(
                    f"unknown scope {unknown[0]!r}; use {', '.join([*PRODUCT_SCOPES, ADMIN_SCOPE])}"
                )
        return value


def _beyond(field: str, what: str) -> ApiError:
    return ApiError(403, f"{field}: {what}", code="beyond_creating_key")


def _within(creator: ApiKey, spec: CreateKeyRequest) -> dict:
    """The new key's settings: what was asked, never more than the creating key has.

    Whatever is left out comes from the creating key (its product scopes, its models,
    limits, budget and expiry); asking for more is a 403 naming the field.
    """
    scopes = spec.scopes
    if scopes is None:
        scopes = [scope for scope in PRODUCT_SCOPES if scope in creator.scopes]
    extra = [scope for scope in scopes if scope not in creator.scopes]
    if extra:
        raise _beyond("scopes", f"{', '.join(extra)} is beyond this key's scopes")
    models = spec.allowed_models
    if creator.allowed_models:
        models = models or list(creator.allowed_models)
        extra = [model for model in models if model not in creator.allowed_models]
        if extra:
            raise _beyond("allowed_models", f"{', '.join(extra)} is beyond this key's models")
    given = {"scopes": scopes, "allowed_models": models}
    for name, field, asked, has, noun in (
        ("rpm_limit", "rpm_limit", spec.rpm_limit, creator.rpm_limit, "limit"),
        ("tpm_limit", "tpm_limit", spec.tpm_limit, creator.tpm_limit, "limit"),
        ("monthly_budget", "monthly_budget_micros", spec.monthly_budget_micros,
         creator.monthly_budget, "budget"),
    ):  # fmt: skip
        if has is not None and asked is not None and asked > has:
            raise _beyond(field, f"{asked} is beyond this key's {noun} of {has}")
        given[name] = has if asked is None else asked
    expires = creator.expires_at
    if spec.expires_in_days:
        asked_expiry = timezone.now() + timedelta(days=spec.expires_in_days)
        if expires is not None and asked_expiry > expires:
            raise _beyond(
                "expires_in_days",
                f"{spec.expires_in_days} days is beyond this key, which expires at "
                f"{expires.isoformat(timespec='seconds')}",
            )
        expires = asked_expiry
    return given | {"expires_at": expires}


@transaction.atomic
def _create_key(caller: Caller, spec: CreateKeyRequest) -> dict:
    creator = (
        ApiKey.objects.select_related("workspace", "created_by")
        .filter(pk=caller.key.id, workspace_id=caller.workspace_id)
        .active()
        .first()
    )
    if creator is not None and creator.created_by_id is not None:
        # The person's membership stays locked until the new key is saved: their removal
        # (which locks it before revoking their keys) either sees the new key or came first.
        membership = Membership.objects.select_for_update().filter(
            user_id=creator.created_by_id, workspace_id=caller.workspace_id
        )
        if not list(membership.values_list("pk", flat=True)):
            creator = None
    if creator is None:
        # The cached copy that let the call in was a moment behind the database.
        raise ApiError(401, "This API key has been revoked or disabled.", code="inactive_api_key")
    key, secret = actions.create_key(
        workspace=creator.workspace,
        name=spec.name,
        created_by=creator.created_by,
        created_by_key=creator,
        **_within(creator, spec),
    )
    return _key_item(key, {}) | {"key": secret}


def _revoke_key(workspace_id: int, key_id: str) -> None:
    try:
        parsed = uuid.UUID(key_id)
    except ValueError:
        raise ApiError(404, "API key not found", code="not_found") from None
    key = ApiKey.objects.filter(
        workspace_id=workspace_id, pk=parsed, revoked_at__isnull=True
    ).first()
    if key is None:
        raise ApiError(404, "API key not found", code="not_found")
    actions.revoke_key(key=key, by=None)


@endpoint("GET", "POST")
async def api_keys(request: HttpRequest) -> HttpResponse:
    caller = request.caller
    _require_admin(caller)
    if request.method == "GET":
        return JsonResponse(await db.run(_list_keys, caller.workspace_id), safe=False)
    spec = validate(CreateKeyRequest, json_body(request))
    return JsonResponse(await db.run(_create_key, caller, spec), status=201)


@endpoint("DELETE")
async def api_key(request: HttpRequest, key_id: str) -> HttpResponse:
    _require_admin(request.caller)
    await db.run(_revoke_key, request.caller.workspace_id, key_id)
    return HttpResponse(status=204)


def _spend_since(workspace_id: int, day: date) -> int:
    total = UsageRollup.objects.filter(workspace_id=workspace_id, day__gte=day).aggregate(
        s=Sum("cost")
    )["s"]
    return total or 0


def _balance(workspace_id: int) -> dict:
    today = timezone.now().date()
    month_start = today.replace(day=1)
    by_model = (
        UsageRollup.objects.filter(workspace_id=workspace_id, day__gte=month_start)
        .values("model")
        .annotate(
            cost=Sum("cost"), requests=Sum("requests"), tin=Sum("tokens_in"), tout=Sum("tokens_out")
        )
        .order_by("-cost")
    )
    balance = balances.balance_of(workspace_id=workspace_id)
    return {
        "currency": settings.BILLING_CURRENCY,
        # What is left after actual charges; of it, `held` is set aside for calls in progress.
        "balance_micros": balance.left,
        "balance": _decimal(balance.left),
        "held_micros": balance.held,
        "held": _decimal(balance.held),
        "spending": {
            "today_micros": _spend_since(workspace_id, today),
            "week_micros": _spend_since(workspace_id, today - timedelta(days=today.weekday())),
            "month_micros": _spend_since(workspace_id, month_start),
            "by_model": [
                {
                    "model": row["model"],
                    "total_micros": row["cost"],
                    "total_requests": row["requests"],
                    "total_input_tokens": row["tin"],
                    "total_output_tokens": row["tout"],
                }
                for row in by_model
            ],
        },
    }


@endpoint("GET")
async def balance(request: HttpRequest) -> HttpResponse:
    _require_admin(request.caller)
    return JsonResponse(await db.run(_balance, request.caller.workspace_id))


def _int_param(request: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter from `low` to `high`; 400 naming it otherwise."""
    raw = request.GET.get(name)
    if raw is None:
        return default
    bound = f"a whole number from {low} to {high}"
    if not _WHOLE_NUMBER.fullmatch(raw):
        raise ApiError(400, f"The '{name}' parameter must be {bound}.", code="invalid_parameter")
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, f"The '{name}' parameter must be {bound}.", code="invalid_parameter")
    return value


def _transactions(workspace_id: int, kind: str | None, limit: int, offset: int) -> list[dict]:
    entries = LedgerEntry.objects.filter(workspace_id=workspace_id)
    if kind:
        entries = entries.filter(kind=kind)
    page = list(entries.order_by("-created_at", "-id")[offset : offset + limit])
    records = {
        r.request_id: r
        for r in UsageRecord.objects.filter(
            workspace_id=workspace_id, request_id__in=[e.request_id for e in page if e.request_id]
        )
    }
    left = balances.left_after(workspace_id=workspace_id, entries=page)
    items = []
    for entry, left_after in zip(page, left, strict=True):
        record = records.get(entry.request_id)
        description = entry.note or entry.get_kind_display()
        if record:
            description = f"{record.model or record.product}: {record.tokens_in} in / {record.tokens_out} out tokens"
        items.append(
            {
                "id": entry.pk,
                "type": entry.kind,
                "amount_micros": entry.amount,
                "amount": _decimal(entry.amount),
                "balance_after_micros": left_after,
                "description": description,
                "model": record.model if record else None,
                "input_tokens": record.tokens_in if record else None,
                "output_tokens": record.tokens_out if record else None,
                "request_id": entry.request_id or None,
                "created_at": _when(entry.created_at),
            }
        )
    return items


@endpoint("GET")
async def transactions(request: HttpRequest) -> HttpResponse:
    _require_admin(request.caller)
    kind = request.GET.get("type")
    if kind is not None and kind not in _TRANSACTION_TYPES:
        raise ApiError(
            400, f"Type must be one of: {', '.join(_TRANSACTION_TYPES)}", code="invalid_parameter"
        )
    limit = _int_param(request, "limit", 50, 1, 200)
    offset = _int_param(request, "offset", 0, 0, _MAX_OFFSET)
    items = await db.run(_transactions, request.caller.workspace_id, kind, limit, offset)
    return JsonResponse(items, safe=False)


def _date_param(request: HttpRequest, name: str, default: date) -> date:
    raw = request.GET.get(name)
    if raw is None:
        return default
    try:
        if not _DATE.fullmatch(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError(
            400, f"The '{name}' parameter must be a date like 2026-01-31.", code="invalid_parameter"
        ) from None


def _usage(
    workspace_id: int, start: date, end: date, group: str, model: str | None, key_id: str | None
) -> dict:
    rows = UsageRollup.objects.filter(workspace_id=workspace_id, day__gte=start, day__lte=end)
    if model:
        rows = rows.filter(model=model)
    if key_id:
        rows = rows.filter(api_key_id=key_id)
    sums = {
        "requests": Sum("requests"),
        "errors": Sum("errors"),
        "tokens_in": Sum("tokens_in"),
        "tokens_out": Sum("tokens_out"),
        "cost_micros": Sum("cost"),
    }
    total = {k: v or 0 for k, v in rows.aggregate(**sums).items()}
    field = _GROUPS[group]
    groups = []
    for row in rows.values(field).annotate(**sums).order_by(field):
        value = row[field]
        groups.append(
            {
                "key": value.isoformat()
                if isinstance(value, date)
                else (str(value) if value else None)
            }
            | {k: row[k] or 0 for k in sums}
        )
    return {
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "currency": settings.BILLING_CURRENCY,
        "group_by": group,
        "total": total,
        "groups": groups,
    }


@endpoint("GET")
async def usage(request: HttpRequest) -> HttpResponse:
    _require_admin(request.caller)
    today = timezone.now().date()
    start = _date_param(request, "start_date", today.replace(day=1))
    end = _date_param(request, "end_date", today)
    if start > end:
        raise ApiError(
            400, "The 'start_date' must not be after 'end_date'.", code="invalid_parameter"
        )
    group = request.GET.get("group_by", "day")
    if group not in _GROUPS:
        raise ApiError(
            400,
            f"The 'group_by' parameter must be one of: {', '.join(_GROUPS)}.",
            code="invalid_parameter",
        )
    key_id = request.GET.get("api_key_id")
    if key_id is not None:
        try:
            key_id = str(uuid.UUID(key_id))
        except ValueError:
            raise ApiError(
                400, "The 'api_key_id' parameter must be a key id.", code="invalid_parameter"
            ) from None
    data = await db.run(
        _usage, request.caller.workspace_id, start, end, group, request.GET.get("model"), key_id
    )
    return JsonResponse(data)


KINDS = ["grant", "charge", "refund", "hold", "release"]
CREATED_KEY = {
    "allOf": [
        {"$ref": "#/components/schemas/ApiKey"},
        {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
    ]
}

SCHEMAS = {
    "ApiKey": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "key_prefix": {"type": "string"},
            "last_four": {"type": "string"},
            "is_active": {"type": "boolean"},
            "status": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "allowed_models": {"type": "array", "items": {"type": "string"}},
            "rpm_limit": INTEGER_OR_NULL,
            "tpm_limit": INTEGER_OR_NULL,
            "monthly_budget_micros": INTEGER_OR_NULL,
            "total_requests": {"type": "integer"},
            "total_tokens": {"type": "integer"},
            "last_used_at": STRING_OR_NULL,
            "expires_at": STRING_OR_NULL,
            "created_at": STRING_OR_NULL,
        },
        "required": ["id", "name", "key_prefix", "last_four", "is_active", "scopes"],
    },
    "Balance": {
        "type": "object",
        "properties": {
            "currency": {"type": "string"},
            "balance_micros": {"type": "integer"},
            "balance": {"type": "string"},
            "spending": {"type": "object"},
        },
        "required": ["currency", "balance_micros", "balance", "spending"],
    },
    "Transaction": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "type": {"enum": ["grant", "charge", "refund", "hold", "release"]},
            "amount_micros": {"type": "integer"},
            "amount": {"type": "string"},
            "balance_after_micros": INTEGER_OR_NULL,
            "description": {"type": "string"},
            "request_id": STRING_OR_NULL,
            "created_at": STRING_OR_NULL,
        },
        "required": ["id", "type", "amount_micros", "amount"],
    },
    "Usage": {
        "type": "object",
        "properties": {
            "start_date": {"type": "string", "format": "date"},
            "end_date": {"type": "string", "format": "date"},
            "currency": {"type": "string"},
            "group_by": {"type": "string"},
            "total": {"type": "object"},
            "groups": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["start_date", "end_date", "group_by", "total", "groups"],
    },
}

OPERATIONS = [
    Operation(
        "/v1/api-keys", "get", "The workspace's keys (admin scope)", ACCOUNT_ERRORS, list_of("ApiKey"),
        view=api_keys, name="api_keys",
    ),
    Operation(
        "/v1/api-keys", "post", "Create a key; its secret is in `key`, shown once (admin scope)",
        (400, *ACCOUNT_ERRORS, 413), CREATED_KEY, status=201, request=CreateKeyRequest,
        example={"name": "script", "scopes": ["chat"]},
        view=api_keys, name="api_keys",
    ),
    Operation(
        "/v1/api-keys/{key_id}", "delete", "Revoke a key (admin scope)", (*ACCOUNT_ERRORS, 404),
        status=204,
        view=api_key, name="api_key",
    ),
    Operation(
        "/v1/billing/balance", "get", "Balance and spending (admin scope)", ACCOUNT_ERRORS, "Balance",
        view=balance, name="billing_balance",
    ),
    Operation(
        "/v1/billing/transactions", "get", "Ledger entries, newest first (admin scope)",
        (400, *ACCOUNT_ERRORS), list_of("Transaction"),
        query=(
            query_param("type", {"enum": KINDS}, "Only entries of this kind."),
            query_param("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "How many."),
            query_param(
                "offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000_000},
                "How many to skip.",
            ),
        ),
        view=transactions, name="billing_transactions",
    ),
    Operation(
        "/v1/usage", "get", "Usage and spend by day, model, product, source or key (admin scope)",
        (400, *ACCOUNT_ERRORS), "Usage",
        query=(
            query_param("start_date", {"type": "string", "format": "date"}, "First day (default: the 1st)."),
            query_param("end_date", {"type": "string", "format": "date"}, "Last day (default: today)."),
            query_param("group_by", {"enum": ["day", "model", "product", "source", "key"]}, "Grouping."),
            query_param("model", {"type": "string"}, "Only this model."),
            query_param("api_key_id", {"type": "string", "format": "uuid"}, "Only this key."),
        ),
        view=usage, name="usage",
    ),
]  # fmt: skip
