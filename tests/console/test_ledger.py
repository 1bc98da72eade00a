"""The ledger keeps the balance exact: the sum of its entries, never below zero."""

import io
import re

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Workspace
from console import books, ledger
from console.models import BillingAccount, EntryKind, Hold, LedgerEntry
from tests.conftest import ACME_CREDIT

pytestmark = pytest.mark.django_db


def _balance_matches_entries(workspace: Workspace) -> int:
    balance = ledger.balance_of(workspace)
    total = LedgerEntry.objects.filter(workspace=workspace).aggregate(s=Sum("amount"))["s"] or 0
    assert balance == total
    assert balance >= 0
    return balance


operations = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.integers(1, 5_000_000)),
        st.tuples(st.just("refund"), st.integers(1, 1_000_000)),
        st.tuples(st.just("hold"), st.integers(1, 3_000_000)),
        st.tuples(st.just("settle"), st.integers(0, 4_000_000)),
        st.tuples(st.just("release"), st.just(0)),
    ),
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=operations)
def test_any_sequence_of_movements_keeps_the_balance_exact_and_never_negative(steps):
    workspace = Workspace.objects.create(name="Prop", slug=f"prop-{Workspace.objects.count()}")
    open_holds: list[tuple[str, int]] = []
    for n, (kind, amount) in enumerate(steps):
        before = (
            BillingAccount.objects.filter(workspace=workspace)
            .values_list("balance", flat=True)
            .first()
            or 0
        )
        if kind == "grant":
            ledger.grant(workspace=workspace, amount=amount, note="test", by=None)
        elif kind == "refund":
            ledger.refund(workspace=workspace, amount=amount, note="test", by=None)
        elif kind == "hold":
            request_id = f"{workspace.slug}-{n}"
            try:
                ledger.hold(
                    workspace_id=workspace.pk,
                    api_key_id=None,
                    key_budget=None,
                    amount=amount,
                    request_id=request_id,
                )
            except ledger.PaymentRequired:
                assert amount > before
            else:
                open_holds.append((request_id, amount))
        elif open_holds:
            request_id, held = open_holds.pop(0)
            charged = ledger.settle(request_id=request_id, cost=amount if kind == "settle" else 0)
            assert charged == min(amount if kind == "settle" else 0, held)
        _balance_matches_entries(workspace)
    assert Hold.objects.filter(workspace=workspace).count() == len(open_holds)
    for request_id, _held in open_holds:
        ledger.settle(request_id=request_id, cost=0)
    assert not Hold.objects.filter(workspace=workspace).exists()
    _balance_matches_entries(workspace)


def test_a_hold_the_balance_cannot_cover_is_refused_and_writes_nothing(acme):
    before = LedgerEntry.objects.count()
    with pytest.raises(ledger.PaymentRequired, match="Insufficient balance"):
        ledger.hold(
            workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=10**12, request_id="r1"
        )
    assert LedgerEntry.objects.count() == before and not Hold.objects.exists()


def test_settling_releases_the_hold_and_charges_the_actual_cost(acme):
    start = ledger.balance_of(acme)
    ledger.hold(workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=900, request_id="r1")
    assert ledger.balance_of(acme) == start - 900
    assert ledger.settle(request_id="r1", cost=250) == 250
    assert ledger.balance_of(acme) == start - 250
    kinds = list(
        LedgerEntry.objects.filter(request_id="r1").order_by("id").values_list("kind", "amount")
    )
    assert kinds == [(EntryKind.HOLD, -900), (EntryKind.RELEASE, 900), (EntryKind.CHARGE, -250)]
    # Settling twice charges nothing more.
    assert ledger.settle(request_id="r1", cost=250) == 0
    assert ledger.balance_of(acme) == start - 250


def test_stale_holds_are_released_by_the_command(acme):
    start = ledger.balance_of(acme)
    ledger.hold(
        workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=5000, request_id="crashed"
    )
    Hold.objects.update(created_at=Hold.objects.get().created_at.replace(year=2000))
    ledger.hold(
        workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=700, request_id="in-flight"
    )
    out = io.StringIO()
    call_command("releaseholds", stdout=out)
    assert "Released 1 stale hold." in out.getvalue()
    assert list(Hold.objects.values_list("request_id", flat=True)) == ["in-flight"]
    assert ledger.balance_of(acme) == start - 700


def test_grantcredit_adds_exact_credit_with_a_note(acme):
    start = ledger.balance_of(acme)
    out = io.StringIO()
    call_command(
        "grantcredit", "--workspace", "acme", "--amount", "0.25", "--note", "goodwill", stdout=out
    )
    assert ledger.balance_of(acme) == start + 250_000
    entry = LedgerEntry.objects.filter(kind=EntryKind.GRANT).latest("id")
    assert entry.note == "goodwill" and entry.amount == 250_000
    assert "Added $0.25 to acme" in out.getvalue()


def test_grantcredit_says_what_is_left_while_a_worker_holds_a_lease(acme):
    books.hold(workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=1, request_id="r")
    assert Hold.objects.get().amount == 10_000_000  # a tenth of the balance, set aside
    out = io.StringIO()
    call_command("grantcredit", "--workspace", "acme", "--amount", "5", "--note", "x", stdout=out)
    assert "Added $5.00 to acme; the balance is $105.00." in out.getvalue()


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("abc", "is not an amount"),
        ("-5", "must be positive"),
        ("0.0000001", "more than six decimals"),
    ],
)
def test_grantcredit_refuses_a_bad_amount_and_adds_nothing(acme, amount, message):
    before = LedgerEntry.objects.count()
    with pytest.raises(CommandError, match=message):
        call_command("grantcredit", "--workspace", "acme", "--amount", amount, "--note", "x")
    assert LedgerEntry.objects.count() == before


def test_grantcredit_names_an_unknown_workspace(db):
    with pytest.raises(CommandError, match="No workspace with the slug 'nope'"):
        call_command("grantcredit", "--workspace", "nope", "--amount", "5", "--note", "x")


def test_editing_a_price_in_the_admin_adds_a_version_and_keeps_the_old_one(db, client):
    from django.utils import timezone

    from accounts.models import User
    from console.models import Price
    from console.pricing import forget_prices, unit_cost
    from tests.conftest import seed_prices

    seed_prices()
    staff = User.objects.create_superuser(email="staff@example.com", password="x-strong-password-1")
    client.force_login(staff, backend="django.contrib.auth.backends.ModelBackend")
    old = Price.objects.get(product="chat", model="mira", unit="input_token")
    form = {
        "product": "chat",
        "model": "mira",
        "unit": "input_token",
        "variant": "",
        "amount": "900000",
        "per": "1000000",
        "valid_from_0": timezone.now().strftime("%Y-%m-%d"),
        "valid_from_1": "00:00:00",
    }
    response = client.post(f"/admin/console/price/{old.pk}/change/", form)
    assert response.status_code == 302
    versions = Price.objects.filter(product="chat", model="mira", unit="input_token").order_by(
        "valid_from"
    )
    assert [p.amount for p in versions] == [500_000, 900_000]
    forget_prices()
    assert unit_cost("chat", "mira", "input_token", 1_000_000) == 900_000


def test_the_admin_lists_what_is_left_and_what_is_held(acme, client):
    from accounts.models import User

    books.hold(workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=1, request_id="r")
    staff = User.objects.create_superuser(email="staff@example.com", password="x-strong-password-1")
    client.force_login(staff, backend="django.contrib.auth.backends.ModelBackend")
    page = client.get("/admin/console/billingaccount/").content.decode()
    row = page[page.index("Acme") :]
    assert re.search(r'field-left">\$100\.00<.*field-held_for_calls">\$10\.00<', row, re.S)


# ---------- append-only, in the database itself ----------

LEDGER = LedgerEntry._meta.db_table


def _refused(action) -> None:
    """The database refuses `action`, and nothing of it stays."""
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        action()


def _sql(statement: str, *params) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_the_database_refuses_to_change_a_ledger_entry(acme):
    entry = LedgerEntry.objects.get(workspace=acme)
    entry.amount = 1
    _refused(entry.save)
    _refused(lambda: LedgerEntry.objects.filter(pk=entry.pk).update(note="edited"))
    for field in LedgerEntry._meta.concrete_fields:  # every column but the author's
        if field.name != "created_by":
            column = connection.ops.quote_name(field.column)
            _refused(
                lambda c=column: _sql(f"UPDATE {LEDGER} SET {c} = {c} WHERE id = %s", entry.pk)
            )
    entry.refresh_from_db()
    assert (entry.amount, entry.note) == (ACME_CREDIT, "test credit")


def test_the_database_refuses_to_give_an_entry_another_author(acme, alice, bob):
    entry = ledger.grant(workspace=acme, amount=1, note="by Alice", by=alice)
    _refused(lambda: LedgerEntry.objects.filter(pk=entry.pk).update(created_by=bob))
    _refused(
        lambda: _sql(f"UPDATE {LEDGER} SET created_by_id = %s WHERE id = %s", bob.pk, entry.pk)
    )
    entry.refresh_from_db()
    assert entry.created_by == alice


def test_the_database_refuses_to_delete_a_ledger_entry(acme):
    entry = LedgerEntry.objects.get(workspace=acme)
    _refused(entry.delete)
    _refused(LedgerEntry.objects.all().delete)
    _refused(lambda: _sql(f"DELETE FROM {LEDGER} WHERE id = %s", entry.pk))
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()
    assert ledger.balance_of(acme) == ACME_CREDIT


def test_deleting_a_user_keeps_their_entries_without_an_author(acme, alice):
    entry = ledger.grant(workspace=acme, amount=1, note="by Alice", by=alice)
    alice.delete()
    entry.refresh_from_db()
    assert entry.created_by is None
    assert (entry.amount, entry.note) == (1, "by Alice")


def test_deleting_a_workspace_deletes_its_ledger_and_only_its_ledger(acme, globex):
    ledger.grant(workspace=globex, amount=1, note="Globex's", by=None)
    acme_id = acme.pk
    acme.delete()
    assert not LedgerEntry.objects.filter(workspace_id=acme_id).exists()
    # Nothing of the deletion lets another workspace's entries go.
    assert LedgerEntry.objects.filter(workspace=globex).count() == 1
    _refused(LedgerEntry.objects.filter(workspace=globex).delete)
    _refused(lambda: _sql(f"DELETE FROM {LEDGER}"))


def test_flush_empties_the_ledger_with_everything_else(transactional_db, acme, globex):
    ledger.grant(workspace=globex, amount=1, note="Globex's", by=None)
    call_command("flush", interactive=False)
    assert not LedgerEntry.objects.exists() and not Workspace.objects.exists()
    again = Workspace.objects.create(name="Acme", slug="acme")
    ledger.grant(workspace=again, amount=1, note="after the flush", by=None)
    _refused(LedgerEntry.objects.all().delete)
