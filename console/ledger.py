"""The credit ledger: every movement of a workspace's balance, and the rules that keep it exact.

A workspace's balance lives on its BillingAccount and is only ever changed here, in
the same transaction as the append-only LedgerEntry that explains the change, so the
balance always equals the sum of the entries. Money leaves the balance through a
conditional UPDATE (`balance >= amount`), so concurrent calls cannot overspend it and
it never goes below zero; a database constraint says so too.

A call first holds its worst-case cost (`hold`), then settles (`settle`): the hold is
released and the actual cost charged. Budgets (per key and per workspace, per month)
are reserved against in the same way, on MonthlySpend rows.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import User, Workspace
from console.models import BillingAccount, EntryKind, Hold, LedgerEntry, MonthlySpend

logger = logging.getLogger(__name__)


class PaymentRequired(Exception):
    """A call that the balance or a budget cannot cover (HTTP 402)."""


def month_of(moment: datetime | None = None) -> str:
    return (moment or timezone.now()).strftime("%Y-%m")


def account_for(workspace_id: int) -> BillingAccount:
    account, _ = BillingAccount.objects.get_or_create(
        workspace_id=workspace_id, defaults={"alert_thresholds": settings.DEFAULT_ALERT_THRESHOLDS}
    )
    return account


def _entry(workspace_id: int, kind: str, amount: int, balance: int, **fields) -> LedgerEntry:
    return LedgerEntry.objects.create(
        workspace_id=workspace_id, kind=kind, amount=amount, balance_after=balance, **fields
    )


def _move(workspace_id: int, amount: int) -> int:
    """Add a signed amount to the balance unless it would go below zero; the new balance."""
    account_for(workspace_id)
    accounts = BillingAccount.objects.filter(workspace_id=workspace_id)
    if amount < 0:
        accounts = accounts.filter(balance__gte=-amount)
    if not accounts.update(balance=F("balance") + amount):
        raise PaymentRequired("Insufficient balance. Add credit on the Billing page and try again.")
    return BillingAccount.objects.values_list("balance", flat=True).get(workspace_id=workspace_id)


@transaction.atomic
def grant(*, workspace: Workspace, amount: int, note: str, by: User | None) -> LedgerEntry:
    """Add credit; `amount` in micro-units, positive."""
    if amount <= 0:
        raise ValueError("A grant must be a positive amount.")
    balance = _move(workspace.pk, amount)
    return _entry(workspace.pk, EntryKind.GRANT, amount, balance, note=note[:255], created_by=by)


@transaction.atomic
def refund(
    *, workspace: Workspace, amount: int, request_id: str = "", note: str, by: User | None
) -> LedgerEntry:
    if amount <= 0:
        raise ValueError("A refund must be a positive amount.")
    balance = _move(workspace.pk, amount)
    return _entry(
        workspace.pk,
        EntryKind.REFUND,
        amount,
        balance,
        request_id=request_id,
        note=note[:255],
        created_by=by,
    )


def _spend_row(workspace_id: int, api_key_id, month: str) -> MonthlySpend:
    try:
        with transaction.atomic():
            row, _ = MonthlySpend.objects.get_or_create(
                workspace_id=workspace_id, api_key_id=api_key_id, month=month
            )
    except IntegrityError:
        row = MonthlySpend.objects.get(
            workspace_id=workspace_id, api_key_id=api_key_id, month=month
        )
    return row


def _commit_spend(
    workspace_id: int, api_key_id, month: str, amount: int, limit: int | None, what: str
) -> None:
    row = _spend_row(workspace_id, api_key_id, month)
    rows = MonthlySpend.objects.filter(pk=row.pk)
    if limit is not None and amount > 0:
        rows = rows.filter(committed__lte=limit - amount)
    if not rows.update(committed=F("committed") + amount):
        raise PaymentRequired(
            f"The monthly budget of {what} is used up; it renews on the first of next month."
        )


@transaction.atomic
def hold(
    *,
    workspace_id: int,
    api_key_id: str | None,
    key_budget: int | None,
    amount: int,
    request_id: str,
) -> None:
    """Set aside `amount` for a call, or raise PaymentRequired before anything goes upstream."""
    month = month_of()
    balance = _move(workspace_id, -amount)
    limit = BillingAccount.objects.values_list("monthly_limit", flat=True).get(
        workspace_id=workspace_id
    )
    _commit_spend(workspace_id, None, month, amount, limit, "this workspace")
    if api_key_id:
        _commit_spend(workspace_id, api_key_id, month, amount, key_budget, "this API key")
    _entry(workspace_id, EntryKind.HOLD, -amount, balance, request_id=request_id)
    Hold.objects.create(
        request_id=request_id,
        workspace_id=workspace_id,
        api_key_id=api_key_id,
        amount=amount,
        month=month,
    )


@transaction.atomic
def settle(*, request_id: str, cost: int) -> int:
    """Release a call's hold and charge what it cost (at most the hold); returns the charge."""
    held = Hold.objects.select_for_update().filter(request_id=request_id).first()
    if held is None:
        return 0
    charge = min(cost, held.amount)
    if cost > held.amount:
        logger.warning("call %s cost %s, more than its hold %s", request_id, cost, held.amount)
    workspace_id = held.workspace_id
    balance = _move(workspace_id, held.amount)
    _entry(workspace_id, EntryKind.RELEASE, held.amount, balance, request_id=request_id)
    if charge:
        balance = _move(workspace_id, -charge)
        _entry(workspace_id, EntryKind.CHARGE, -charge, balance, request_id=request_id)
    change = {"committed": F("committed") + charge - held.amount, "spent": F("spent") + charge}
    MonthlySpend.objects.filter(
        workspace_id=workspace_id, api_key__isnull=True, month=held.month
    ).update(**change)
    if held.api_key_id:
        MonthlySpend.objects.filter(
            workspace_id=workspace_id, api_key_id=held.api_key_id, month=held.month
        ).update(**change)
    held.delete()
    return charge


def release_stale(*, older_than: timedelta) -> int:
    """Release holds left by a worker that died mid-call; returns how many."""
    cutoff = timezone.now() - older_than
    released = 0
    for request_id in Hold.objects.filter(created_at__lt=cutoff).values_list(
        "request_id", flat=True
    ):
        settle(request_id=request_id, cost=0)
        released += 1
    return released


def balance_of(workspace: Workspace) -> int:
    return account_for(workspace.pk).balance
