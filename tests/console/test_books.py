"""A worker's books: credit held in leases, and calls booked in batches in the background.

These tests call the functions the gateway's database thread runs (`books.hold`,
`books.flush`) in the test's own thread and transaction; the gateway's tests cover the
same through a live server.
"""

import time

import pytest
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Workspace
from console import books, ledger
from console.actions import create_key
from console.models import BillingAccount, EntryKind, Hold, LedgerEntry, UsageRecord
from console.pricing import token_cost
from tests.conftest import ACME_CREDIT, seed_prices

pytestmark = pytest.mark.django_db


def _fields(workspace_id: int, request_id: str, tokens_out: int = 100, key_id=None) -> dict:
    return {
        "request_id": request_id,
        "workspace_id": workspace_id,
        "api_key_id": key_id,
        "user_id": None,
        "source": "api",
        "product": "chat",
        "endpoint": "/v1/chat/completions",
        "model": "mira",
        "node": "sim-1",
        "status": 200,
        "stream": False,
        "tokens_in": 10,
        "tokens_out": tokens_out,
        "units": {},
        "latency_ms": 5,
        "ttft_ms": None,
        "error": "",
        "created_at": timezone.now(),
    }


def _hold(workspace_id: int, amount: int, request_id: str, key_budget=None, key_id=None):
    return books.hold(
        workspace_id=workspace_id,
        api_key_id=key_id,
        key_budget=key_budget,
        amount=amount,
        request_id=request_id,
    )


def _book(held, tokens_out: int = 100, key_id=None) -> None:
    books.book(
        books.Booking(
            fields=_fields(held.workspace_id, held.request_id, tokens_out, key_id), held=held
        )
    )


def _exact(workspace: Workspace) -> int:
    balance = ledger.balance_of(workspace)
    total = LedgerEntry.objects.filter(workspace=workspace).aggregate(s=Sum("amount"))["s"] or 0
    assert balance == total >= 0
    return balance


def test_a_lease_is_held_once_and_calls_take_from_it_in_memory(acme, django_assert_num_queries):
    first = _hold(acme.pk, 5_000, "r1")
    lease = Hold.objects.get()
    assert lease.request_id.startswith("lease_") and lease.amount == ACME_CREDIT // 10
    assert ledger.balance_of(acme) == ACME_CREDIT - lease.amount
    with django_assert_num_queries(0):
        second = books.hold_now(
            workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=5_000, request_id="r2"
        )
    assert second is not None and second.lease is first.lease

    _book(first, tokens_out=100)
    _book(second, tokens_out=40)
    books.flush()
    cost1, cost2 = token_cost("chat", "mira", 10, 100), token_cost("chat", "mira", 10, 40)
    records = dict(UsageRecord.objects.values_list("request_id", "cost"))
    assert records == {"r1": cost1, "r2": cost2}
    charges = LedgerEntry.objects.filter(kind=EntryKind.CHARGE)
    assert dict(charges.values_list("request_id", "amount")) == {"r1": -cost1, "r2": -cost2}
    # Charged from the lease: the balance already went down by the whole lease.
    assert ledger.balance_of(acme) == ACME_CREDIT - lease.amount
    assert Hold.objects.get().amount == lease.amount - cost1 - cost2
    _exact(acme)

    books.flush(give_back=True)
    assert not Hold.objects.exists()
    assert _exact(acme) == ACME_CREDIT - cost1 - cost2


def test_the_last_credit_can_be_spent_and_no_more(db):
    seed_prices()
    workspace = Workspace.objects.create(name="Tight", slug="tight")
    ledger.grant(workspace=workspace, amount=10_000, note="test", by=None)
    held = [_hold(workspace.pk, 3_000, f"r{n}") for n in range(3)]
    with pytest.raises(ledger.PaymentRequired, match="Insufficient balance"):
        _hold(workspace.pk, 3_000, "r3")
    held.append(_hold(workspace.pk, 1_000, "r4"))  # exactly what is left
    assert ledger.balance_of(workspace) == 0
    with pytest.raises(ledger.PaymentRequired):
        _hold(workspace.pk, 1, "r5")
    for h in held:
        _book(h, tokens_out=0)  # the calls failed: nothing to charge
    books.flush(give_back=True)
    assert _exact(workspace) == 10_000 - 4 * token_cost("chat", "mira", 10, 0)
    assert not Hold.objects.exists()


def test_a_lease_no_call_uses_is_given_back_when_idle(acme, monkeypatch):
    held = _hold(acme.pk, 5_000, "r1")
    _book(held)
    books.flush()
    assert Hold.objects.exists()  # still in use a moment ago
    monkeypatch.setattr(books, "LEASE_IDLE", 0.0)
    books.flush()
    assert not Hold.objects.exists()
    assert (
        books.hold_now(
            workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=1, request_id="r2"
        )
        is None
    )


def test_a_lease_taken_before_a_monthly_limit_is_not_used_after_it(acme):
    first = _hold(acme.pk, 5_000, "r1")
    BillingAccount.objects.filter(workspace=acme).update(monthly_limit=8_000)
    books.flush()  # what the background writer does every few milliseconds
    # A call in flight keeps its hold; new calls may not use the old lease...
    assert (
        books.hold_now(
            workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=1, request_id="r2"
        )
        is None
    )
    # ...and hold under the limit, which counts the old lease until it is given back.
    with pytest.raises(ledger.PaymentRequired, match="monthly budget of this workspace"):
        _hold(acme.pk, 5_000, "r3")
    _book(first, tokens_out=0)
    books.flush()
    assert not Hold.objects.exists()  # the old lease went back once its call was booked
    _hold(acme.pk, 3_000, "r4")
    assert Hold.objects.get().amount == 3_000  # no more than the limit leaves
    _hold(acme.pk, 4_000, "r5")  # the first call spent a little of the 8,000 too
    with pytest.raises(ledger.PaymentRequired, match="monthly budget of this workspace"):
        _hold(acme.pk, 2_000, "r6")


def test_a_key_with_a_monthly_budget_holds_per_call(acme, alice):
    key, _secret = create_key(workspace=acme, name="budgeted", created_by=alice, monthly_budget=10)
    held = _hold(acme.pk, 9, "r1", key_budget=10, key_id=str(key.pk))
    assert held.lease is None and Hold.objects.get().request_id == "r1"
    with pytest.raises(ledger.PaymentRequired, match="budget of this API key"):
        _hold(acme.pk, 9, "r2", key_budget=10, key_id=str(key.pk))
    _book(held, tokens_out=0, key_id=key.pk)
    books.flush()
    assert not Hold.objects.exists()
    assert UsageRecord.objects.get().api_key == key


def test_a_batch_that_fails_is_written_call_by_call(acme, caplog):
    first = _hold(acme.pk, 5_000, "r1")
    again = _hold(acme.pk, 5_000, "r1")  # the same request id: its record cannot be written
    other = _hold(acme.pk, 5_000, "r2")
    for held in (first, again, other):
        _book(held)
    assert books.flush(give_back=True) is False
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["r1", "r2"]
    assert "could not book the call r1" in caplog.text
    # The call that failed is kept and tried again: found booked under its id, it is done.
    assert books.flush(give_back=True) is True
    assert not Hold.objects.exists()
    cost = token_cost("chat", "mira", 10, 100)
    assert _exact(acme) == ACME_CREDIT - 2 * cost  # the call that was not booked was not charged


def test_a_stopping_worker_writes_what_it_has_queued(acme):
    _book(_hold(acme.pk, 5_000, "r1"))
    books._at_exit()
    assert UsageRecord.objects.filter(request_id="r1").exists()
    assert not Hold.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_background_writer_books_calls_without_being_asked(settings):
    settings.GATEWAY_BOOK_SECONDS = 0.02
    seed_prices()
    workspace = Workspace.objects.create(name="Acme", slug="acme")
    ledger.grant(workspace=workspace, amount=ACME_CREDIT, note="test", by=None)
    try:
        _book(_hold(workspace.pk, 5_000, "r1"))
        deadline = time.monotonic() + 10
        while not UsageRecord.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert UsageRecord.objects.get().request_id == "r1"
    finally:
        books.stop()
    assert not Hold.objects.exists()


steps = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.integers(1, 2_000_000)),
        st.tuples(st.just("hold"), st.integers(1, 900_000)),
        st.tuples(st.just("book"), st.integers(0, 30_000)),
        st.tuples(st.just("flush"), st.booleans()),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps)
def test_leases_and_batches_keep_the_balance_exact(steps):
    seed_prices()
    workspace = Workspace.objects.create(name="Prop", slug=f"prop-{Workspace.objects.count()}")
    in_flight = []
    for n, (kind, value) in enumerate(steps):
        if kind == "grant":
            ledger.grant(workspace=workspace, amount=value, note="test", by=None)
        elif kind == "hold":
            try:
                in_flight.append(_hold(workspace.pk, value, f"{workspace.slug}-{n}"))
            except ledger.PaymentRequired:
                pass
        elif kind == "book" and in_flight:
            _book(in_flight.pop(0), tokens_out=value)
        elif kind == "flush":
            books.flush(give_back=value)
        _exact(workspace)
    for held in in_flight:
        _book(held, tokens_out=0)
    books.flush(give_back=True)
    assert not Hold.objects.filter(workspace=workspace).exists()
    _exact(workspace)
    books.forget()


def _refuse_usage_records(refuse: bool) -> None:
    """Make the database refuse (or accept again) new usage records, as a full disk or a
    lost connection would: a real error from the database, in the middle of a batch."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            if refuse:
                cursor.execute(
                    "CREATE FUNCTION refuse_usage() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'could not extend file: No space left on device'; END $$ "
                    "LANGUAGE plpgsql"
                )
                cursor.execute(
                    "CREATE TRIGGER refuse_usage BEFORE INSERT ON console_usagerecord "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_usage()"
                )
            else:
                cursor.execute("DROP TRIGGER refuse_usage ON console_usagerecord")
                cursor.execute("DROP FUNCTION refuse_usage()")
        elif refuse:
            cursor.execute(
                "CREATE TRIGGER refuse_usage BEFORE INSERT ON console_usagerecord BEGIN "
                "SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
        else:
            cursor.execute("DROP TRIGGER refuse_usage")


def test_a_batch_the_database_refuses_is_kept_and_written_when_it_can_be(acme, caplog):
    held = [_hold(acme.pk, 5_000, f"r{n}") for n in range(3)]
    for h in held:
        _book(h)
    _refuse_usage_records(True)
    assert books.flush() is False
    assert "could not book 3 calls; they stay journaled" in caplog.text
    assert not UsageRecord.objects.exists()
    assert not LedgerEntry.objects.filter(kind=EntryKind.CHARGE).exists()

    _refuse_usage_records(False)
    assert books.flush(give_back=True) is True
    cost = token_cost("chat", "mira", 10, 100)
    assert dict(UsageRecord.objects.values_list("request_id", "cost")) == {
        "r0": cost,
        "r1": cost,
        "r2": cost,
    }
    assert LedgerEntry.objects.filter(kind=EntryKind.CHARGE).count() == 3
    assert not Hold.objects.exists()
    assert _exact(acme) == ACME_CREDIT - 3 * cost
