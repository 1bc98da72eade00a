"""What a balance shows people: the money left after actual charges, and what is held.

`BillingAccount.balance` is net of open holds: each gateway worker holds a lease of
about a tenth of the balance (`console.books`), and calls on a key with a budget hold
their worst case, so the column drops by a tenth at a workspace's first call. Holds
spend nothing: they set credit aside for calls in progress and are given back, less
what the calls cost. So what is left is the balance plus the open holds, and the
holds are shown apart, as held (part of what is left).

In the ledger, holds and releases set credit aside and give it back; only the other
entries (credit, charges, refunds) change what is left. What was left after an entry
is what is left now, less what those entries added since.
"""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from django.db.models import OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce

from console.models import BillingAccount, EntryKind, Hold, LedgerEntry

SET_ASIDE = (EntryKind.HOLD, EntryKind.RELEASE)


@dataclass(frozen=True)
class Balance:
    left: int  # micro-units left after actual charges
    held: int  # of which set aside for calls in progress


def _total(rows) -> Coalesce:
    """The sum of the rows' amounts, as a subquery; 0 for none."""
    return Coalesce(
        Subquery(
            rows.order_by().values("workspace_id").annotate(total=Sum("amount")).values("total")
        ),
        0,
    )


def open_holds() -> Coalesce:
    """The open holds of the billing account's workspace, to annotate accounts with."""
    return _total(Hold.objects.filter(workspace_id=OuterRef("workspace_id")))


def _newer(entry: LedgerEntry) -> Q:
    return Q(created_at__gte=entry.created_at) & (
        Q(created_at__gt=entry.created_at) | Q(id__gt=entry.pk)
    )


def _older(entry: LedgerEntry) -> Q:
    return Q(created_at__lte=entry.created_at) & (
        Q(created_at__lt=entry.created_at) | Q(id__lt=entry.pk)
    )


def balance_of(*, workspace_id: int) -> Balance:
    """What is left and what is held, read together (one statement)."""
    row = (
        BillingAccount.objects.filter(workspace_id=workspace_id)
        .annotate(held=open_holds())
        .values_list("balance", "held")
        .first()
    )
    balance, held = row or (0, 0)
    return Balance(left=balance + held, held=held)


def left_after(*, workspace_id: int, entries: Sequence[LedgerEntry]) -> list[int]:
    """What was left after each of a workspace's ledger entries, given newest first as
    pages of the ledger list them (a kind filter may leave entries out between them).

    One statement, whose cost grows with the entries newer than the page and those
    within it, not with the whole ledger.
    """
    if not entries:
        return []
    changes = LedgerEntry.objects.filter(workspace_id=OuterRef("workspace_id")).exclude(
        kind__in=SET_ASIDE
    )
    # What changed what is left since the newest entry, and between each two entries.
    sums = {"newer": _total(changes.filter(_newer(entries[0])))}
    for n, (newer, older) in enumerate(itertools.pairwise(entries)):
        sums[f"between_{n}"] = _total(changes.filter(_older(newer) & _newer(older)))
    row = (
        BillingAccount.objects.filter(workspace_id=workspace_id)
        .annotate(held=open_holds(), **sums)
        .values("balance", "held", *sums)
        .first()
    )
    if row is None:
        return [0] * len(entries)
    left = row["balance"] + row["held"] - row["newer"]
    shown = []
    for n, entry in enumerate(entries):
        shown.append(left)
        if entry.kind not in SET_ASIDE:
            left -= entry.amount
        left -= row.get(f"between_{n}", 0)
    return shown
