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

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection
from django.db.models import OuterRef, Subquery, Sum
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


# Read in one statement, so that what is left now and the changes since each entry agree;
# in SQL, as building it with the ORM cost ten times what running it does. A running sum
# from the newest entry down, over the entries down to the page's oldest, gives what
# changed what is left since each of them.
_LEFT_AFTER = """
    WITH changes AS (
        SELECT id, SUM(CASE WHEN kind IN (%s, %s) THEN 0 ELSE amount END)
            OVER (ORDER BY created_at DESC, id DESC ROWS UNBOUNDED PRECEDING) AS since
        FROM console_ledgerentry
        WHERE workspace_id = %s AND (created_at > %s OR (created_at = %s AND id >= %s))
    )
    SELECT changes.id, changes.since, account.balance + COALESCE(
        (SELECT SUM(amount) FROM console_hold WHERE workspace_id = account.workspace_id), 0)
    FROM changes, console_billingaccount AS account
    WHERE account.workspace_id = %s AND changes.id IN ({ids})
"""


def left_after(*, workspace_id: int, entries: Sequence[LedgerEntry]) -> list[int]:
    """What was left after each of a workspace's ledger entries, given newest first as
    pages of the ledger list them (a kind filter may leave entries out between them).

    Its cost grows with the entries newer than the oldest one given, not with the
    whole ledger.
    """
    if not entries:
        return []
    oldest = entries[-1]
    created = connection.ops.adapt_datetimefield_value(oldest.created_at)
    set_aside = [kind.value for kind in SET_ASIDE]
    newer = [workspace_id, created, created, oldest.pk]
    ids = [entry.pk for entry in entries]
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            _LEFT_AFTER.format(ids=marks),  # noqa: S608 - only placeholders are formatted in
            [*set_aside, *newer, workspace_id, *ids],
        )
        # int(): PostgreSQL sums bigints as numeric.
        found = {pk: int(now - since) for pk, since, now in cursor.fetchall()}
    # `since` counts the entry itself: what was left after it is what is left now, less
    # what the entries after it changed.
    return [
        found[entry.pk] + (0 if entry.kind in SET_ASIDE else entry.amount)
        if entry.pk in found
        else 0
        for entry in entries
    ]
