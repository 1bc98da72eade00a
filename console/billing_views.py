"""The Billing page: balance, this month's spend against the limit, credit, budgets, the ledger.

Everyone in a workspace may read it ("billing.view"); adding credit and changing the
monthly limit or the alert thresholds need "billing.manage" (owners and admins). Money
moves only through `console.ledger`; limit and threshold changes go to the audit log.
"""

from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST
from django_htmx.http import replace_url

from accounts.access import workspace_view
from console import balances, ledger
from console.billing_forms import BudgetForm, CreditForm
from console.books import LEASE_PREFIX
from console.models import (
    AlertSent,
    ApiKey,
    BillingAccount,
    EntryKind,
    LedgerEntry,
    MonthlySpend,
    UsageRecord,
    UsageRollup,
)
from console.pricing import format_money

TEMPLATE = "console/billing.html"
PAGE_SIZE = 25
MOVEMENTS = (EntryKind.HOLD, EntryKind.RELEASE)  # the pair every call leaves behind

# The kind filter, in the order the page shows it: (value, label).
KIND_FILTERS = [
    ("", "All"),
    (EntryKind.GRANT, "Credit"),
    (EntryKind.CHARGE, "Charges"),
    (EntryKind.REFUND, "Refunds"),
    (EntryKind.HOLD, "Holds"),
    (EntryKind.RELEASE, "Releases"),
]
KIND_TONES = {
    EntryKind.GRANT: "ok",
    EntryKind.CHARGE: "accent",
    EntryKind.REFUND: "ok",
    EntryKind.HOLD: "warn",
    EntryKind.RELEASE: "",
}


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(now: datetime) -> datetime:
    start = _month_start(now)
    return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)


def _percent(part: int, whole: int | None) -> int | None:
    """A whole percentage for people and for the width of a bar; money stays integer."""
    if not whole:
        return None
    return part * 100 // whole


def _tone(percent: int | None) -> str:
    if percent is None or percent < 80:
        return "ok"
    return "warn" if percent < 100 else "danger"


def _billing_url(request: HttpRequest, **query: str | int | None) -> str:
    url = reverse("billing", args=[request.workspace.slug])
    query = {name: value for name, value in query.items() if value}
    return f"{url}?{urlencode(query)}" if query else url


# ---------- the summary: balance, this month, the limit, alerts ----------


def _summary_context(request: HttpRequest, account: BillingAccount) -> dict:
    workspace = request.workspace
    now = timezone.now()
    month = ledger.month_of(now)
    spend = MonthlySpend.objects.filter(workspace=workspace, api_key__isnull=True, month=month)
    spent = spend.values_list("spent", flat=True).first() or 0
    limit = account.monthly_limit
    used = _percent(spent, limit)
    last_grant = (
        LedgerEntry.objects.filter(workspace=workspace, kind=EntryKind.GRANT)
        .order_by("-created_at", "-id")
        .first()
    )
    return {
        "account": account,
        "now": now,
        "renews_on": _next_month(now),
        "spent": spent,
        "requests": UsageRollup.objects.filter(
            workspace=workspace, day__gte=_month_start(now).date()
        ).aggregate(n=Coalesce(Sum("requests"), 0))["n"],
        "balance": balances.balance_of(workspace_id=workspace.pk),
        "limit": limit,
        # Like the balance, what is left after charges: holds are credit set aside, not spent.
        "limit_left": max(limit - spent, 0) if limit else None,
        "limit_used": used,
        "limit_bar": min(used, 100) if used is not None else 0,
        "limit_tone": _tone(used),
        "ticks": [t for t in account.alert_thresholds if t < 100] if limit else [],
        "last_grant": last_grant,
        "alerts": _alerts(workspace, month),
    }


def _alerts(workspace, month: str) -> list[AlertSent]:
    """This month's budget alerts: the highest threshold reached by the workspace and each key."""
    seen, alerts = set(), []
    for alert in (
        AlertSent.objects.filter(workspace=workspace, month=month)
        .select_related("api_key")
        .order_by("-threshold", "-created_at")
    ):
        if alert.api_key_id not in seen:
            seen.add(alert.api_key_id)
            alert.tone = "error" if alert.threshold >= 100 else "warning"
            alerts.append(alert)
    return alerts


# ---------- transactions ----------


def _cursor(request: HttpRequest, name: str) -> LedgerEntry | None:
    value = request.GET.get(name, "")
    if not value.isascii() or not value.isdigit():
        return None
    return LedgerEntry.objects.filter(workspace=request.workspace, pk=int(value)).first()


def _older(entry: LedgerEntry) -> Q:
    return Q(created_at__lt=entry.created_at) | Q(created_at=entry.created_at, id__lt=entry.id)


def _newer(entry: LedgerEntry) -> Q:
    return Q(created_at__gt=entry.created_at) | Q(created_at=entry.created_at, id__gt=entry.id)


def _who(entries: list[LedgerEntry], workspace) -> None:
    """Say who caused each entry: the person who added credit, or the key or member that called."""
    calls = {
        record.request_id: record
        for record in UsageRecord.objects.filter(
            workspace=workspace, request_id__in={e.request_id for e in entries if e.request_id}
        ).select_related("api_key", "user")
    }
    for entry in entries:
        record = calls.get(entry.request_id)
        entry.tone = KIND_TONES.get(entry.kind, "")
        entry.is_lease = entry.request_id.startswith(LEASE_PREFIX)
        if entry.created_by:
            entry.who, entry.who_detail = entry.created_by.display_name, ""
        elif record and record.api_key:
            entry.who, entry.who_detail = record.api_key.name, record.api_key.masked
        elif record and record.user:
            entry.who, entry.who_detail = record.user.display_name, record.get_source_display()
        elif entry.is_lease:
            entry.who, entry.who_detail = "API gateway", "for calls in progress"
        elif entry.request_id:
            entry.who, entry.who_detail = "Call in flight", ""
        else:
            entry.who, entry.who_detail = "System", ""


def _transactions_context(request: HttpRequest, *, new_entry: LedgerEntry | None = None) -> dict:
    """One page of the ledger, newest first, by keyset on (created_at, id)."""
    kind = request.GET.get("kind", "")
    if kind not in EntryKind.values:
        kind = ""
    with_holds = not kind and request.GET.get("holds") == "1"
    entries = LedgerEntry.objects.filter(workspace=request.workspace).select_related("created_by")
    if kind:
        entries = entries.filter(kind=kind)
    elif not with_holds:
        entries = entries.exclude(kind__in=MOVEMENTS)

    before, after = _cursor(request, "before"), _cursor(request, "after")
    page: list[LedgerEntry] = []
    if before:
        page = list(entries.filter(_older(before)).order_by("-created_at", "-id")[:PAGE_SIZE])
    elif after:
        page = list(entries.filter(_newer(after)).order_by("created_at", "id")[:PAGE_SIZE])[::-1]
    if len(page) < PAGE_SIZE and not before:
        page = list(entries.order_by("-created_at", "-id")[:PAGE_SIZE])
    has_newer = bool(page) and entries.filter(_newer(page[0])).exists()
    has_older = bool(page) and entries.filter(_older(page[-1])).exists()
    _who(page, request.workspace)
    left = balances.left_after(workspace_id=request.workspace.pk, entries=page)
    for entry, left_after in zip(page, left, strict=True):
        entry.left_after = left_after

    holds = "1" if with_holds else None
    return {
        "entries": page,
        "kind": kind,
        "with_holds": with_holds,
        "new_entry_id": new_entry.pk if new_entry else None,
        "filters": [
            {
                "label": label,
                "url": _billing_url(request, kind=value, holds=holds if not value else None),
                "active": value == kind,
            }
            for value, label in KIND_FILTERS
        ],
        "holds_toggle_url": _billing_url(request, holds=None if with_holds else "1"),
        "first_url": _billing_url(request, kind=kind, holds=holds) if has_newer else "",
        "newer_url": (
            _billing_url(request, kind=kind, holds=holds, after=page[0].pk) if has_newer else ""
        ),
        "older_url": (
            _billing_url(request, kind=kind, holds=holds, before=page[-1].pk) if has_older else ""
        ),
        "usage_url": reverse("usage", args=[request.workspace.slug]),
    }


# ---------- spend per key and per member ----------


def _spend_context(request: HttpRequest) -> dict:
    workspace = request.workspace
    now = timezone.now()
    first_day = _month_start(now).date()
    rollups = UsageRollup.objects.filter(workspace=workspace, day__gte=first_day)

    spent_by_key = dict(
        MonthlySpend.objects.filter(
            workspace=workspace, month=ledger.month_of(now), api_key__isnull=False
        ).values_list("api_key_id", "spent")
    )
    requests_by_key = dict(
        rollups.filter(api_key__isnull=False)
        .values("api_key")
        .annotate(n=Sum("requests"))
        .values_list("api_key", "n")
    )
    keys = []
    for key in ApiKey.objects.for_workspace(workspace).select_related("created_by"):
        key.month_spend = spent_by_key.get(key.pk, 0)
        key.month_requests = requests_by_key.get(key.pk, 0)
        if not key.is_active and not key.month_spend:
            continue
        key.used = _percent(key.month_spend, key.monthly_budget)
        key.bar = min(key.used, 100) if key.used is not None else 0
        key.tone = _tone(key.used)
        keys.append(key)
    keys.sort(key=lambda k: (-k.month_spend, k.name.lower()))

    by_user = {
        row["user"]: row
        for row in rollups.values("user").annotate(cost=Sum("cost"), requests=Sum("requests"))
    }
    total = sum(row["cost"] for row in by_user.values())
    members = []
    for membership in workspace.memberships.select_related("user"):
        row = by_user.pop(membership.user_id, {"cost": 0, "requests": 0})
        members.append({**row, "user": membership.user, "role": membership})
    for user_id, row in by_user.items():  # spend by people who have left, or by no one
        if row["cost"] or row["requests"]:
            members.append({**row, "user": None, "former": user_id is not None, "role": None})
    for member in members:  # rounded to the nearest, unlike budgets, which only say 100% at 100%
        member["share"] = (member["cost"] * 200 + total) // (total * 2) if total else 0
    members.sort(key=lambda m: (-m["cost"], -m["requests"]))
    return {"key_spend": keys, "member_spend": members}


# ---------- pages ----------


def _forms_context(
    request: HttpRequest,
    account: BillingAccount,
    *,
    credit_form: CreditForm | None = None,
    budget_form: BudgetForm | None = None,
) -> dict:
    return {
        "can_manage": request.membership.can("billing.manage"),
        "can_view_keys": request.membership.can("keys.view"),
        "credit_form": credit_form or CreditForm(),
        "budget_form": budget_form or BudgetForm(instance=account),
        "currency": settings.BILLING_CURRENCY,
    }


def _page_context(request: HttpRequest, **forms) -> dict:
    account = ledger.account_for(request.workspace.pk)
    return (
        _summary_context(request, account)
        | _forms_context(request, account, **forms)
        | _transactions_context(request)
        | _spend_context(request)
    )


def _render(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ("HX-Request",))  # the same URL answers htmx with a partial
    return response


@workspace_view("billing.view")
def billing(request: HttpRequest) -> HttpResponse:
    if request.htmx and not request.htmx.history_restore_request:
        return _render(request, f"{TEMPLATE}#transactions", _transactions_context(request))
    return _render(request, TEMPLATE, _page_context(request))


def _refused(request: HttpRequest, partial: str, **forms) -> HttpResponse:
    """The form again with a message beside each wrong field; nothing was written."""
    if request.htmx:
        account = ledger.account_for(request.workspace.pk)
        context = {"account": account} | _forms_context(request, account, **forms)
        return _render(request, f"{TEMPLATE}#{partial}", context, status=400)
    return _render(request, TEMPLATE, _page_context(request, **forms), status=400)


def _changed(
    request: HttpRequest, partial: str, done: str, *, new_entry: LedgerEntry | None = None
) -> HttpResponse:
    """After a change: the card that made it, then the summary (and, after a new ledger
    entry, the ledger) out of band."""
    if not request.htmx:
        messages.success(request, done)
        return redirect("billing", slug=request.workspace.slug)
    account = ledger.account_for(request.workspace.pk)
    context = _summary_context(request, account) | _forms_context(request, account)
    if new_entry:
        context |= _transactions_context(request, new_entry=new_entry)
    response = _render(request, f"{TEMPLATE}#{partial}", context | {"done": done, "oob": True})
    if new_entry:
        # The ledger comes back on its first page, unfiltered: so does the address.
        replace_url(response, _billing_url(request))
    return response


@workspace_view("billing.manage")
@require_POST
def add_credit(request: HttpRequest) -> HttpResponse:
    form = CreditForm(request.POST)
    if not form.is_valid():
        return _refused(request, "credit-card", credit_form=form)
    entry = ledger.grant(
        workspace=request.workspace,
        amount=form.cleaned_data["amount"],
        note=form.cleaned_data["note"],
        by=request.user,
    )
    left = balances.balance_of(workspace_id=request.workspace.pk).left
    done = f"Added {format_money(entry.amount)}; the balance is {format_money(left)}."
    return _changed(request, "credit-added", done, new_entry=entry)


@workspace_view("billing.manage")
@require_POST
def set_budget(request: HttpRequest) -> HttpResponse:
    form = BudgetForm(request.POST, instance=ledger.account_for(request.workspace.pk))
    if not form.is_valid():
        return _refused(request, "budget-card", budget_form=form)
    account = form.save_by(request.user)
    if account.monthly_limit is None:
        done = "Saved: no monthly limit."
    else:
        done = f"Saved: a monthly limit of {format_money(account.monthly_limit)}."
    return _changed(request, "budget-saved", done)
