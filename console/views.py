import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import Coalesce, Lower
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.timesince import timeuntil
from django.views.decorators.http import require_POST
from django_htmx.http import replace_url, reswap, retarget

from accounts.access import workspace_view
from console import actions, balances
from console.forms import GRACE_CHOICES, KeyForm, RotateForm
from console.models import (
    ADMIN_SCOPE,
    ApiKey,
    ApiKeyQuerySet,
    AuditEvent,
    Product,
    UsageRecord,
    UsageRollup,
)

# What each page that is not built yet will hold, shown instead of a broken link.
COMING = {
    "playground": (
        "Playground",
        "Try every Mira product from the browser and see what each call costs.",
        [
            "Streaming chat with system prompt, parameters and image attachments",
            "Compare two or three models side by side",
            "View the exact request as curl, Python or JavaScript",
            "Saved conversations and shared prompts",
        ],
    ),
    "usage": (
        "Usage",
        "Requests, tokens, spend, errors and latency for the workspace.",
        [
            "Spend and requests per day, by model or product",
            "Filters by date, key, member, model and source",
            "A request log with a detail view per call, and CSV export",
        ],
    ),
    "billing": (
        "Billing",
        "The workspace balance, budgets and every transaction.",
        [
            "Credit balance and an append-only ledger",
            "Monthly budgets per key and per workspace, with alerts",
            "Spend this month per key and per member",
        ],
    ),
}


@workspace_view("dashboard.view")
def dashboard(request: HttpRequest) -> HttpResponse:
    workspace = request.workspace
    today = timezone.now().date()
    month = UsageRollup.objects.filter(
        workspace=workspace, day__gte=today.replace(day=1)
    ).aggregate(
        spend=Sum("cost"),
        requests=Sum("requests"),
        tokens_in=Sum("tokens_in"),
        tokens_out=Sum("tokens_out"),
    )
    days = {
        row["day"]: row["cost"]
        for row in UsageRollup.objects.filter(
            workspace=workspace, day__gt=today - timedelta(days=30)
        )
        .values("day")
        .annotate(cost=Sum("cost"))
    }
    series = [
        (today - timedelta(days=n), days.get(today - timedelta(days=n), 0))
        for n in range(29, -1, -1)
    ]
    peak = max((cost for _, cost in series), default=0) or 1
    context = {
        "member_count": workspace.memberships.count(),
        "pending_invitations": workspace.invitations.pending().count(),
        "balance": balances.balance_of(workspace_id=workspace.pk),
        "month_spend": month["spend"] or 0,
        "month_requests": month["requests"] or 0,
        "month_tokens": (month["tokens_in"] or 0) + (month["tokens_out"] or 0),
        "bars": [
            {"day": day, "cost": cost, "x": 10 * n, "height": h, "y": 100 - h}
            for n, (day, cost) in enumerate(series)
            for h in [max(round(96 * cost / peak, 1), 1 if cost else 0)]
        ],
        "has_usage": any(cost for _, cost in series) or bool(month["requests"]),
        "has_key": ApiKey.objects.filter(workspace=workspace).exists(),
        "used_playground": UsageRollup.objects.filter(
            workspace=workspace, source="playground"
        ).exists(),
        "recent": UsageRecord.objects.filter(workspace=workspace).select_related("api_key", "user")[
            :6
        ],
    }
    return render(request, "console/dashboard.html", context)


def _coming(request: HttpRequest, page: str) -> HttpResponse:
    title, lead, items = COMING[page]
    return render(request, "console/coming.html", {"title": title, "lead": lead, "items": items})


@workspace_view("playground.use")
def playground(request: HttpRequest) -> HttpResponse:
    return _coming(request, "playground")


@workspace_view("usage.view")
def usage(request: HttpRequest) -> HttpResponse:
    return _coming(request, "usage")


@workspace_view("billing.view")
def billing(request: HttpRequest) -> HttpResponse:
    return _coming(request, "billing")


# ---------- API keys ----------
#
# Who sees which keys: owners and admins ("keys.manage_all") see and manage every key of
# the workspace. Developers see and manage only the keys they created: a key spends the
# workspace's money on its creator's behalf, so another developer's keys are not theirs
# to read, rotate or revoke (they get a 404, as if the key did not exist).

SORTS: dict[str, tuple[Any, ...]] = {
    "name": (Lower("name").asc(), "-created_at"),
    "-name": (Lower("name").desc(), "-created_at"),
    "created": ("created_at",),
    "-created": ("-created_at",),
    "last_used": (F("last_used_at").asc(nulls_first=True), "-created_at"),
    "-last_used": (F("last_used_at").desc(nulls_last=True), "-created_at"),
}
DEFAULT_SORT = "-created"
# The sortable columns and the order a first click asks for.
SORT_COLUMNS = {"name": "name", "created": "-created", "last_used": "-last_used"}
AUDIT_LIMIT = 50

# Which actions make sense for a key in each status; the page offers only these.
ALLOWED = {
    "disable": {"active"},
    "enable": {"disabled"},
    "revoke": {"active", "disabled", "expired"},
    "rotate": {"active"},
}
DONE = {"disable": "disabled", "enable": "re-enabled", "revoke": "revoked", "rotate": "rotated"}

EVENTS = {  # audit action -> (verb, icon, tone)
    "key.created": ("created", "plus", "ok"),
    "key.rotated": ("rotated", "refresh", "accent"),
    "key.revoked": ("revoked", "trash", "danger"),
    "key.disabled": ("disabled", "alert", "warn"),
    "key.enabled": ("re-enabled", "check", "ok"),
}

# Why a key was revoked when its creator's membership ended (console.receivers).
STOPPED_BECAUSE = {
    "member_removed": "{member} was removed from the workspace",
    "member_left": "{member} left the workspace",
    "membership_deleted": "{member} is no longer a member",
}


def _duration(seconds: int) -> str:
    """A grace period for people: `1 hour`, `24 hours`, `7 days`."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds % size == 0 and (unit != "day" or seconds > 86400):
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return ""


def _can_manage_all(request: HttpRequest) -> bool:
    return request.membership.can("keys.manage_all")


def _visible_keys(request: HttpRequest) -> ApiKeyQuerySet:
    keys = ApiKey.objects.for_workspace(request.workspace)
    if not _can_manage_all(request):
        keys = keys.filter(created_by=request.user)
    return keys


def _month_start() -> datetime:
    return timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _get_key_for_member(request: HttpRequest, pk: str | None, *, lock: bool = False) -> ApiKey:
    """A key this member may manage: 404 for another workspace's key, or someone else's
    key when the member is a developer. `lock` holds the row until the transaction ends."""
    try:
        key_id = uuid.UUID(str(pk))
    except ValueError:
        raise Http404("No such key.") from None
    keys = _visible_keys(request).select_related("workspace", "created_by")
    if lock:
        keys = keys.select_for_update(of=("self",))
    return get_object_or_404(keys, pk=key_id)


def _present(key: ApiKey) -> ApiKey:
    """Put what the key's row shows on the key: its spend and a summary of what it may do."""
    if not hasattr(key, "month_spend"):
        key.month_spend = key.spend_this_month()
    products = [label for value, label in Product.choices if value in key.scopes]
    if len(products) == len(Product.choices):
        key.products_display = "All products"
    elif len(products) <= 2:
        key.products_display = ", ".join(products) or "No products"
    else:
        key.products_display = f"{len(products)} products"
    key.has_admin_scope = ADMIN_SCOPE in key.scopes
    key.expires_in = timeuntil(key.expires_at, depth=1) if key.expires_at else ""
    key.models_display = (
        ", ".join(key.allowed_models)
        if len(key.allowed_models) <= 2
        else f"{len(key.allowed_models)} models"
    )
    return key


def _keys_url(request: HttpRequest, **query: str) -> str:
    url = reverse("keys", args=[request.workspace.slug])
    query = {name: value for name, value in query.items() if value}
    return f"{url}?{urlencode(query)}" if query else url


def _list_context(request: HttpRequest) -> dict:
    q = request.GET.get("q", "").strip()[:100]
    sort = request.GET.get("sort", DEFAULT_SORT)
    if sort not in SORTS:
        sort = DEFAULT_SORT
    visible = _visible_keys(request)
    keys = visible.select_related("created_by").annotate(
        month_spend=Coalesce(Sum("usage__cost", filter=Q(usage__created_at__gte=_month_start())), 0)
    )
    if q:
        keys = keys.filter(Q(name__icontains=q) | Q(prefix__icontains=q))
    sorting = {}
    for column, first in SORT_COLUMNS.items():
        active = sort.lstrip("-") == column
        target = (sort[1:] if sort.startswith("-") else f"-{sort}") if active else first
        sorting[column] = {
            "url": _keys_url(request, q=q, sort=target if target != DEFAULT_SORT else ""),
            "active": active,
            "descending": sort.startswith("-"),
        }
    return {
        "keys": [_present(key) for key in keys.order_by(*SORTS[sort])],
        "total": visible.count(),
        "q": q,
        "sort": sort if sort != DEFAULT_SORT else "",
        "sorting": sorting,
        "clear_search_url": _keys_url(request, sort=sort if sort != DEFAULT_SORT else ""),
        "can_manage_all": _can_manage_all(request),
        "grace_choices": GRACE_CHOICES,
    }


def _recent_events(request: HttpRequest) -> list[AuditEvent]:
    events = AuditEvent.objects.filter(
        workspace=request.workspace, action__startswith="key."
    ).select_related("actor", "api_key")
    if not _can_manage_all(request):
        events = events.filter(api_key__created_by=request.user)
    events = list(events[:AUDIT_LIMIT])
    for event in events:
        event.verb, event.icon, event.tone = EVENTS.get(event.action, (event.action, "bolt", ""))
        event.note = ""
        if event.action == "key.rotated":
            grace = int(event.detail.get("grace_seconds") or 0)
            event.note = f"grace period {_duration(grace)}" if grace else "no grace period"
        elif event.detail.get("reason") in STOPPED_BECAUSE:
            event.note = STOPPED_BECAUSE[event.detail["reason"]].format(**event.detail)
    return events


def _audit_context(request: HttpRequest) -> dict:
    return {"events": _recent_events(request), "audit_limit": AUDIT_LIMIT}


def _page_context(
    request: HttpRequest, *, form: KeyForm | None = None, revealed: dict | None = None
) -> dict:
    return (
        _list_context(request)
        | _audit_context(request)
        | {
            "form": form or KeyForm(allow_admin=_can_manage_all(request)),
            "form_inline": form is not None and not request.htmx,
            "currency": settings.BILLING_CURRENCY,
            "revealed": revealed,
            "api_base_url": request.build_absolute_uri("/v1"),
        }
    )


@workspace_view("keys.view")
def keys(request: HttpRequest) -> HttpResponse:
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "console/keys.html#key-list", _list_context(request))
    return render(request, "console/keys.html", _page_context(request))


def _reveal(
    request: HttpRequest, key: ApiKey, secret: str, *, rotated: dict | None = None
) -> HttpResponse:
    """The page with the new secret on it: the one and only response that carries it."""
    revealed = {"key": _present(key), "secret": secret, "rotated": rotated}
    context = _page_context(request, revealed=revealed)
    if request.htmx:
        response = render(request, "console/keys.html#keys-page", context)
        retarget(response, "#keys-page")
        reswap(response, "outerHTML")
        replace_url(response, _keys_url(request))
    else:
        response = render(request, "console/keys.html", context)
    add_never_cache_headers(response)
    return response


@workspace_view("keys.manage_own")
@require_POST
def key_create(request: HttpRequest) -> HttpResponse:
    form = KeyForm(request.POST, allow_admin=_can_manage_all(request))
    if not form.is_valid():
        if request.htmx:
            context = {"form": form, "currency": settings.BILLING_CURRENCY}
            return render(request, "console/keys.html#create-form", context, status=400)
        context = _page_context(request, form=form)
        return render(request, "console/keys.html", context, status=400)
    key, secret = actions.create_key(
        workspace=request.workspace, created_by=request.user, **form.key_settings()
    )
    return _reveal(request, key, secret)


def _refusal(key: ApiKey, action: str) -> str | None:
    if key.status not in ALLOWED[action]:
        return f"This key is {key.status}, so it cannot be {DONE[action]}."
    if action == "rotate" and key.replaced_by_id:
        return "This key was rotated already: rotate its replacement instead."
    return None


def _row_response(
    request: HttpRequest, key: ApiKey, action: str, *, error: str | None = None
) -> HttpResponse:
    if not request.htmx:
        if error:
            messages.error(request, error)
        else:
            messages.success(request, f"Key {key.name} ({key.masked}) {DONE[action]}.")
        return redirect("keys", slug=request.workspace.slug)
    context = _audit_context(request) | {
        "key": _present(key),
        "row_error": error,
        "oob": True,
        "can_manage_all": _can_manage_all(request),
        "grace_choices": GRACE_CHOICES,
    }
    return render(request, "console/keys.html#row-update", context, status=400 if error else 200)


def _change_key(request: HttpRequest, action: str, operation: Callable[..., None]) -> HttpResponse:
    # The status is checked and changed under a lock, so two clicks cannot both act.
    with transaction.atomic():
        key = _get_key_for_member(request, request.POST.get("key"), lock=True)
        error = _refusal(key, action)
        if error is None:
            operation(key=key, by=request.user)
    return _row_response(request, key, action, error=error)


@workspace_view("keys.manage_own")
@require_POST
def key_disable(request: HttpRequest) -> HttpResponse:
    return _change_key(request, "disable", actions.disable_key)


@workspace_view("keys.manage_own")
@require_POST
def key_enable(request: HttpRequest) -> HttpResponse:
    return _change_key(request, "enable", actions.enable_key)


@workspace_view("keys.manage_own")
@require_POST
def key_revoke(request: HttpRequest) -> HttpResponse:
    return _change_key(request, "revoke", actions.revoke_key)


@workspace_view("keys.manage_own")
@require_POST
def key_rotate(request: HttpRequest) -> HttpResponse:
    form = RotateForm(request.POST)
    with transaction.atomic():
        key = _get_key_for_member(request, request.POST.get("key"), lock=True)
        error = _refusal(key, "rotate")
        if error is None and not form.is_valid():
            error = form.errors["grace"][0]
        if error is None:
            new_key, secret = actions.rotate_key(
                key=key, by=request.user, grace=form.grace_period()
            )
    if error:
        return _row_response(request, key, "rotate", error=error)
    rotated = {"key": key, "grace": _duration(form.cleaned_data["grace"])}
    return _reveal(request, new_key, secret, rotated=rotated)
