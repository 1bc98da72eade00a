"""What a gone worker left is booked and returned by the others (console.recovery): its
journal on this machine at once, its holds anywhere once it has not been seen for a while."""

from datetime import timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from console import books, ledger, recovery, workers
from console.models import EntryKind, Hold, LedgerEntry, UsageRecord, Worker
from console.pricing import token_cost
from tests.conftest import ACME_CREDIT
from tests.console.test_books import _fields

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def journal_dir(settings, tmp_path):
    settings.GATEWAY_JOURNAL_DIR = tmp_path
    return tmp_path


def _exact(workspace) -> int:
    balance = ledger.balance_of(workspace)
    total = LedgerEntry.objects.filter(workspace=workspace).aggregate(s=Sum("amount"))["s"]
    assert balance == total >= 0
    return balance


def _as_gone(owner: str, *, seen: timedelta | None) -> None:
    """Hand this worker's holds to a worker `owner`, last seen `seen` ago (never: None)."""
    Hold.objects.update(owner=owner)
    if seen is not None:
        Worker.objects.create(id=owner, host="elsewhere", pid=1, seen_at=timezone.now() - seen)


def test_the_holds_of_a_worker_not_seen_for_a_while_are_returned(acme):
    books.hold(workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=5_000,
               request_id="r1")  # fmt: skip
    ledger.hold(workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=7_000,
                request_id="r2")  # fmt: skip
    assert ledger.balance_of(acme) < ACME_CREDIT
    books.forget()  # the worker is gone, and its memory with it
    _as_gone("elsewhere-1-dead", seen=timedelta(seconds=workers.GONE_SECONDS + 1))

    recovery.reclaim()
    assert not Hold.objects.exists()
    assert not Worker.objects.filter(pk="elsewhere-1-dead").exists()
    assert _exact(acme) == ACME_CREDIT


def test_the_holds_of_a_worker_seen_lately_are_kept(acme):
    ledger.hold(workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=7_000,
                request_id="r1")  # fmt: skip
    _as_gone("elsewhere-1-alive", seen=timedelta(seconds=1))
    recovery.reclaim()
    assert Hold.objects.get().request_id == "r1"


def test_a_journal_replayed_after_its_lease_was_returned_charges_the_balance(acme, journal_dir):
    held = books.hold(workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=5_000,
                      request_id="r1")  # fmt: skip
    # The worker answered the call and journaled it, then died; another machine returned
    # its lease before this machine came back with the journal.
    owner = "here-2-dead"
    booking = books.Booking(fields=_fields(acme.pk, "r1"), held=held)
    (journal_dir / f"{owner}.1.journal").write_bytes(booking.line())
    books.forget()
    _as_gone(owner, seen=timedelta(seconds=workers.GONE_SECONDS + 1))
    ledger.release_owned(owner)
    assert _exact(acme) == ACME_CREDIT

    recovery.reclaim()
    cost = token_cost("chat", "mira", 10, 100)
    assert UsageRecord.objects.get().cost == cost
    charge = LedgerEntry.objects.get(kind=EntryKind.CHARGE)
    assert (charge.request_id, charge.amount) == ("r1", -cost)
    assert _exact(acme) == ACME_CREDIT - cost
    assert not list(journal_dir.iterdir())


def test_a_journal_is_replayed_once_even_when_its_calls_were_written_before(acme, journal_dir):
    held = books.hold(workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=5_000,
                      request_id="r1")  # fmt: skip
    booking = books.Booking(fields=_fields(acme.pk, "r1"), held=held)
    (journal_dir / "here-3-dead.1.journal").write_bytes(booking.line() + booking.line())
    books.book(booking)
    books.flush()  # written, then the worker died before its journal was discarded
    books.forget()
    _as_gone("here-3-dead", seen=None)

    recovery.reclaim()
    assert UsageRecord.objects.count() == 1
    assert LedgerEntry.objects.filter(kind=EntryKind.CHARGE).count() == 1
    assert not Hold.objects.exists()
    assert _exact(acme) == ACME_CREDIT - token_cost("chat", "mira", 10, 100)


def test_a_journal_whose_worker_lives_is_left_alone(acme, journal_dir):
    held = books.hold(workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=5_000,
                      request_id="r1")  # fmt: skip
    books.book(books.Booking(fields=_fields(acme.pk, "r1"), held=held))
    (segment,) = journal_dir.iterdir()  # this worker's own, locked while it lives
    assert segment.name.startswith(workers.current())
    Hold.objects.update(owner="here-4-alive")
    segment.rename(journal_dir / "here-4-alive.1.journal")  # still locked by its open file

    recovery.reclaim()
    assert not UsageRecord.objects.exists()
    assert Hold.objects.exists()
