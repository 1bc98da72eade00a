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
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import User, Workspace
from console import workers
from console.models import BillingAccount, EntryKind, Hold, LedgerEntry, MonthlySpend

logger = logging.getLogger(__name__)


class PaymentRequired(Exception):
    """A call that the balance or a budget cannot cover (HTTP 402)."""


_this_month: tuple[int, str] = (-1, "")


def month_of(moment: datetime | None = None) -> str:
    """The month as budgets count it (UTC): `2026-11`."""
    global _this_month
    if moment is not None:
        return moment.strftime("%Y-%m")
    minute = int(time.time() // 60)  # asked on every call: worked out once a minute
    if _this_month[0] != minute:
        _this_month = (minute, timezone.now().strftime("%Y-%m"))
    return _this_month[1]


def account_for(workspace_id: int) -> BillingAccount:
    account, _ = BillingAccount.objects.get_or_create(
        workspace_id=workspace_id, defaults={"alert_thresholds": settings.DEFAULT_ALERT_THRESHOLDS}
    )
    return account


def _entry(workspace_id: int, kind: str, amount: int, balance: int, **fields) -> LedgerEntry:
    return LedgerEntry.objects.create(
        workspace_id=workspace_id, kind=kind, amount=amount, balance_after=balance, **fields
    )


# Ids of rows known to exist, so that the hot path updates them without looking them up.
# A stale id (the row was deleted) makes an update match nothing; the row is then looked
# up again and the update retried once.
_accounts: set[int] = set()
_spend_ids: dict[tuple[int, str | None, str], int] = {}


def _move(workspace_id: int, amount: int) -> int:
    """Add a signed amount to the balance unless it would go below zero; the new balance."""
    for attempt in (1, 2):
        if workspace_id not in _accounts:
            account_for(workspace_id)
            _accounts.add(workspace_id)
        accounts = BillingAccount.objects.filter(workspace_id=workspace_id)
        if amount < 0:
            accounts = accounts.filter(balance__gte=-amount)
        if accounts.update(balance=F("balance") + amount):
            return BillingAccount.objects.values_list("balance", flat=True).get(
                workspace_id=workspace_id
            )
        _accounts.discard(workspace_id)
        if attempt == 1 and not BillingAccount.objects.filter(workspace_id=workspace_id).exists():
            continue
        break
    raise PaymentRequired("Insufficient balance. Add credit on the Billing page and try again.")


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


def _spend_id(workspace_id: int, api_key_id: str | None, month: str) -> int:
    key = (workspace_id, api_key_id, month)
    if key not in _spend_ids:
        try:
            with transaction.atomic():
                row, _ = MonthlySpend.objects.get_or_create(
                    workspace_id=workspace_id, api_key_id=api_key_id, month=month
                )
        except IntegrityError:
            row = MonthlySpend.objects.get(
                workspace_id=workspace_id, api_key_id=api_key_id, month=month
            )
        _spend_ids[key] = row.pk
    return _spend_ids[key]


@dataclass(frozen=True)
class Held:
    """What a hold set aside, as its call remembers it."""

    request_id: str
    workspace_id: int
    api_key_id: str | None
    amount: int
    month: str
    monthly_limit: int | None
    # Set aside from a worker's lease (console.books) rather than held in its own row.
    lease: object | None = None


# The hold and the settlement run on every model call, so they are written in SQL
# (portable between SQLite and PostgreSQL): the ORM's query building cost more than
# the queries themselves.


def _prep(model, field: str, value):
    return model._meta.get_field(field).get_db_prep_save(value, connection)


def _take(cursor, workspace_id: int, amount: int) -> tuple[int, int | None]:
    """Take `amount` from the balance if it is there: (new balance, monthly limit)."""
    for attempt in (1, 2):
        if workspace_id not in _accounts:
            account_for(workspace_id)
            _accounts.add(workspace_id)
        cursor.execute(
            f"UPDATE {BillingAccount._meta.db_table} SET balance = balance - %s "
            "WHERE workspace_id = %s AND balance >= %s RETURNING balance, monthly_limit",
            [amount, workspace_id, amount],
        )
        row = cursor.fetchone()
        if row is not None:
            return row[0], row[1]
        _accounts.discard(workspace_id)
        if attempt == 1 and not BillingAccount.objects.filter(workspace_id=workspace_id).exists():
            continue
        break
    raise PaymentRequired("Insufficient balance. Add credit on the Billing page and try again.")


def _spend_where(workspace_id: int, month: str) -> str:
    # The identity is checked as well as the id: a cached id may be that of a row rolled
    # back since, whose id another row now has.
    return f"id = %s AND workspace_id = {int(workspace_id)} AND month = %s"


def _commit(
    cursor, workspace_id: int, api_key_id, month: str, amount: int, limit: int | None, what: str
) -> None:
    table = MonthlySpend._meta.db_table
    where = _spend_where(workspace_id, month)
    for _attempt in (1, 2):
        pk = _spend_id(workspace_id, api_key_id, month)
        if limit is not None and amount > 0:
            cursor.execute(
                f"UPDATE {table} SET committed = committed + %s WHERE {where} AND committed <= %s",
                [amount, pk, month, limit - amount],
            )
        else:
            cursor.execute(
                f"UPDATE {table} SET committed = committed + %s WHERE {where}", [amount, pk, month]
            )
        if cursor.rowcount:
            return
        _spend_ids.pop((workspace_id, api_key_id, month), None)
        if MonthlySpend.objects.filter(pk=pk, workspace_id=workspace_id, month=month).exists():
            break
    raise PaymentRequired(
        f"The monthly budget of {what} is used up; it renews on the first of next month."
    )


def _insert_entries(cursor, rows: list[tuple]) -> None:
    """Ledger entries as (workspace_id, kind, amount, balance_after, request_id)."""
    created = _prep(LedgerEntry, "created_at", timezone.now())
    values = ", ".join(["(%s, %s, %s, %s, %s, '', NULL, %s)"] * len(rows))
    params = [value for row in rows for value in (*row, created)]
    cursor.execute(
        f"INSERT INTO {LedgerEntry._meta.db_table} "
        "(workspace_id, kind, amount, balance_after, request_id, note, created_by_id, created_at) "
        f"VALUES {values}",
        params,
    )


@transaction.atomic
def hold(
    *,
    workspace_id: int,
    api_key_id: str | None,
    key_budget: int | None,
    amount: int,
    request_id: str,
) -> Held:
    """Set aside `amount` for a call, or raise PaymentRequired before anything goes upstream."""
    api_key_id = str(api_key_id) if api_key_id else None
    month = month_of()
    with connection.cursor() as cursor:
        balance, limit = _take(cursor, workspace_id, amount)
        _commit(cursor, workspace_id, None, month, amount, limit, "this workspace")
        if api_key_id:
            _commit(cursor, workspace_id, api_key_id, month, amount, key_budget, "this API key")
        _insert_entries(
            cursor, [(workspace_id, EntryKind.HOLD.value, -amount, balance, request_id)]
        )
        _insert_hold(cursor, request_id, workspace_id, api_key_id, amount, month)
    return Held(request_id, workspace_id, api_key_id, amount, month, limit)


@transaction.atomic
def extend_hold(*, held: Held, amount: int, key_budget: int | None) -> Held:
    """Hold `amount` more for a call that holds on its own (a long session), or raise
    PaymentRequired; the hold as it now is."""
    with connection.cursor() as cursor:
        balance, limit = _take(cursor, held.workspace_id, amount)
        _commit(cursor, held.workspace_id, None, held.month, amount, limit, "this workspace")
        if held.api_key_id:
            _commit(
                cursor, held.workspace_id, held.api_key_id, held.month, amount, key_budget,
                "this API key",
            )  # fmt: skip
        _insert_entries(
            cursor, [(held.workspace_id, EntryKind.HOLD.value, -amount, balance, held.request_id)]
        )
        cursor.execute(
            f"UPDATE {Hold._meta.db_table} SET amount = amount + %s WHERE request_id = %s",
            [amount, held.request_id],
        )
        if cursor.rowcount != 1:
            raise PaymentRequired("The call's hold was returned; it cannot be extended.")
    return replace(held, amount=held.amount + amount, monthly_limit=limit)


def _insert_hold(
    cursor, request_id: str, workspace_id: int, api_key_id: str | None, amount: int, month: str
) -> None:
    cursor.execute(
        f"INSERT INTO {Hold._meta.db_table} "
        "(request_id, workspace_id, api_key_id, amount, month, created_at, owner) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        [
            request_id,
            workspace_id,
            _prep(Hold, "api_key", uuid.UUID(api_key_id)) if api_key_id else None,
            amount,
            month,
            _prep(Hold, "created_at", timezone.now()),
            workers.current(),
        ],
    )


def chargeable(request_id: str, cost: int, held: int) -> int:
    """What a call that held `held` is charged for costing `cost`: never more than its hold."""
    if cost > held:
        logger.warning("call %s cost %s, more than its hold %s", request_id, cost, held)
    return min(cost, held)


@transaction.atomic
def settle(
    *, request_id: str, cost: int, held: Held | None = None, charge_if_released: bool = False
) -> int:
    """Release a call's hold and charge what it cost (at most the hold); returns the charge.

    Settling a call that holds nothing (or was settled already) charges nothing, unless
    `charge_if_released` says the call did hold `held` and was answered: its hold was
    then returned with its worker's (taken for gone), and the call is charged from the
    balance (`charge_late`).
    """
    if held is None:
        row = Hold.objects.filter(request_id=request_id).first()
        if row is None:
            return 0
        api_key_id = str(row.api_key_id) if row.api_key_id else None
        held = Held(request_id, row.workspace_id, api_key_id, row.amount, row.month, None)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {Hold._meta.db_table} WHERE request_id = %s", [request_id])
        if not cursor.rowcount:
            if not charge_if_released or cost <= 0:
                return 0
            charge = chargeable(request_id, cost, held.amount)
            return charge_late(
                workspace_id=held.workspace_id,
                month=held.month,
                charges=[(request_id, held.api_key_id, charge)],
            )[0]
        charge = chargeable(request_id, cost, held.amount)
        workspace_id = held.workspace_id
        cursor.execute(
            f"UPDATE {BillingAccount._meta.db_table} SET balance = balance + %s WHERE workspace_id = %s "
            "RETURNING balance",
            [held.amount - charge, workspace_id],
        )
        balance = cursor.fetchone()[0]
        entries = [
            (workspace_id, EntryKind.RELEASE.value, held.amount, balance + charge, request_id)
        ]
        if charge:
            entries.append((workspace_id, EntryKind.CHARGE.value, -charge, balance, request_id))
        _insert_entries(cursor, entries)
        table = MonthlySpend._meta.db_table
        where = _spend_where(workspace_id, held.month)
        for key_id in (None, held.api_key_id) if held.api_key_id else (None,):
            cursor.execute(
                f"UPDATE {table} SET committed = committed + %s, spent = spent + %s WHERE {where}",
                [
                    charge - held.amount,
                    charge,
                    _spend_id(workspace_id, key_id, held.month),
                    held.month,
                ],
            )
    return charge


def grow_lease(
    *, workspace_id: int, lease_id: str, month: str, need: int, want: int, new: bool
) -> tuple[int, int | None]:
    """Hold `want` more for a worker's lease (console.books), or at least `need`.

    A lease is a hold like any other: taken from the balance and the month's budget,
    written to the ledger, released with `settle()` (also when stale). Returns (the
    amount added, the workspace's monthly limit); PaymentRequired when not even `need`
    can be held.
    """
    for amount in dict.fromkeys((max(want, need), need)):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                balance, limit = _take(cursor, workspace_id, amount)
                _commit(cursor, workspace_id, None, month, amount, limit, "this workspace")
                _insert_entries(
                    cursor, [(workspace_id, EntryKind.HOLD.value, -amount, balance, lease_id)]
                )
                if new:
                    _insert_hold(cursor, lease_id, workspace_id, None, amount, month)
                else:
                    cursor.execute(
                        f"UPDATE {Hold._meta.db_table} SET amount = amount + %s WHERE request_id = %s",
                        [amount, lease_id],
                    )
                    if cursor.rowcount != 1:
                        raise LeaseLost(lease_id)
            return amount, limit
        except PaymentRequired:
            if amount == need:
                raise
    raise AssertionError("unreachable")


class LeaseLost(Exception):
    """A lease's hold is gone from the database (released as stale, or its workspace deleted)."""


def charge_lease(
    *, workspace_id: int, lease_id: str, month: str, charges: list[tuple[str, str | None, int]]
) -> None:
    """Charge calls (request id, key id, amount) from a lease's hold, in one go.

    The lease's hold shrinks by the total; the ledger gets a release of the total and a
    charge per call, so the balance (already reduced by the lease) does not change and
    still equals the sum of the entries.
    """
    total = sum(amount for _, _, amount in charges)
    if not total:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Hold._meta.db_table} SET amount = amount - %s "
            "WHERE request_id = %s AND amount >= %s",
            [total, lease_id, total],
        )
        if cursor.rowcount != 1:
            raise LeaseLost(lease_id)
        cursor.execute(
            f"SELECT balance FROM {BillingAccount._meta.db_table} WHERE workspace_id = %s",
            [workspace_id],
        )
        balance = cursor.fetchone()[0] + total
        entries = [(workspace_id, EntryKind.RELEASE.value, total, balance, lease_id)]
        by_key: dict[str | None, int] = {}
        for request_id, api_key_id, amount in charges:
            if amount:
                balance -= amount
                entries.append((workspace_id, EntryKind.CHARGE.value, -amount, balance, request_id))
                by_key[api_key_id] = by_key.get(api_key_id, 0) + amount
        _insert_entries(cursor, entries)
        table = MonthlySpend._meta.db_table
        where = _spend_where(workspace_id, month)
        # The workspace's commitment already counts the lease, of which this is now spent.
        cursor.execute(
            f"UPDATE {table} SET spent = spent + %s WHERE {where}",
            [total, _spend_id(workspace_id, None, month), month],
        )
        for api_key_id, amount in by_key.items():
            if api_key_id:
                cursor.execute(
                    f"UPDATE {table} SET committed = committed + %s, spent = spent + %s WHERE {where}",
                    [amount, amount, _spend_id(workspace_id, api_key_id, month), month],
                )


def charge_late(
    *, workspace_id: int, month: str, charges: list[tuple[str, str | None, int]]
) -> list[int]:
    """Charge answered calls (request id, key id, amount) whose hold is gone, from the
    balance; what each was charged.

    A hold is returned without its calls' charges only when its worker was taken for
    gone while it was alive, or gone before its journal was replayed: the calls are
    charged now, from what the balance has, and never below zero (what it lacks is
    logged, and given away).
    """
    account = BillingAccount.objects.select_for_update().get(workspace_id=workspace_id)
    balance, charged, entries = account.balance, [], []
    by_key: dict[str | None, int] = {}
    for request_id, api_key_id, amount in charges:
        charge = min(amount, balance)
        if charge < amount:
            logger.error(
                "call %s cost %s, but its hold was gone and the balance had %s",
                request_id, amount, balance,
            )  # fmt: skip
        balance -= charge
        charged.append(charge)
        if charge:
            entries.append((workspace_id, EntryKind.CHARGE.value, -charge, balance, request_id))
            by_key[api_key_id] = by_key.get(api_key_id, 0) + charge
    total = sum(charged)
    if not total:
        return charged
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {BillingAccount._meta.db_table} SET balance = balance - %s WHERE workspace_id = %s",
            [total, workspace_id],
        )
        _insert_entries(cursor, entries)
        table = MonthlySpend._meta.db_table
        where = _spend_where(workspace_id, month)
        for key_id, amount in [(None, total), *((k, a) for k, a in by_key.items() if k)]:
            cursor.execute(
                f"UPDATE {table} SET committed = committed + %s, spent = spent + %s WHERE {where}",
                [amount, amount, _spend_id(workspace_id, key_id, month), month],
            )
    return charged


def _release(holds) -> int:
    """Release holds, charging nothing; returns how many."""
    released = 0
    for request_id in holds.values_list("request_id", flat=True):
        settle(request_id=request_id, cost=0)
        released += 1
    return released


def release_owned(owner: str) -> int:
    """Release the holds of a worker that is gone; returns how many."""
    return _release(Hold.objects.filter(owner=owner))


def release_stale(*, older_than: timedelta) -> int:
    """Release holds left by a worker that died mid-call; returns how many."""
    return _release(Hold.objects.filter(created_at__lt=timezone.now() - older_than))


def balance_of(workspace: Workspace) -> int:
    return account_for(workspace.pk).balance
