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
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, field_validator

from accounts.models import Workspace
from console import actions, db, ledger
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
from gateway.http import endpoint, json_body, validate
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


def _create_key(workspace_id: int, spec: CreateKeyRequest) -> dict:
    workspace = Workspace.objects.get(pk=workspace_id)
    expires = (
        timezone.now() + timedelta(days=spec.expires_in_days) if spec.expires_in_days else None
    )
    key, secret = actions.create_key(
        workspace=workspace,
        name=spec.name,
        created_by=None,
        scopes=spec.scopes,
        allowed_models=spec.allowed_models,
        rpm_limit=spec.rpm_limit,
        tpm_limit=spec.tpm_limit,
        monthly_budget=spec.monthly_budget_micros,
        expires_at=expires,
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
    return JsonResponse(await db.run(_create_key, caller.workspace_id, spec), status=201)


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
    balance = ledger.account_for(workspace_id).balance
    return {
        "currency": settings.BILLING_CURRENCY,
        "balance_micros": balance,
        "balance": _decimal(balance),
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
    items = []
    for entry in page:
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
                "balance_after_micros": entry.balance_after,
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
