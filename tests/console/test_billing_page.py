"""The Billing page: balance and spend, adding credit, the limit and alerts, the ledger, spend tables."""

import re

import pytest
from django.db.models import Sum
from django.utils import timezone

from accounts.roles import Role
from console import books, ledger, usage
from console.actions import create_key
from console.models import AlertSent, AuditEvent, BillingAccount, EntryKind, LedgerEntry
from console.pricing import format_money
from tests.conftest import ACME_CREDIT, signed_in, tiny_call_with_the_lease_held

URL = "/w/acme/billing/"
CREDIT_URL = f"{URL}credit/"
BUDGET_URL = f"{URL}budget/"
HX = {"HX-Request": "true"}


def _call(acme, request_id: str, *, key=None, user=None, tokens_out: int = 2000, settle=True):
    """A chat call with the mira model: hold, then book (1,000 tokens in, `tokens_out` out)."""
    ledger.hold(
        workspace_id=acme.pk,
        api_key_id=key.pk if key else None,
        key_budget=key.monthly_budget if key else None,
        amount=10_000,
        request_id=request_id,
    )
    if settle:
        usage.book(
            request_id=request_id, workspace_id=acme.pk, api_key_id=key.pk if key else None,
            user_id=user.pk if user else None, source="api" if key else "playground",
            product="chat", endpoint="/v1/chat/completions", model="mira", node="sim-1",
            status=200, stream=False, tokens_in=1000, tokens_out=tokens_out, units={},
            latency_ms=120, ttft_ms=40, error="",
        )  # fmt: skip


# mira: $0.50 per million tokens in, $1.50 out
CALL_COST = 1000 * 500_000 // 1_000_000 + 2000 * 1_500_000 // 1_000_000  # 3,500 micro-units


def _balance(acme) -> int:
    return BillingAccount.objects.get(workspace=acme).balance


def _ledger_sum(acme) -> int:
    return LedgerEntry.objects.filter(workspace=acme).aggregate(s=Sum("amount"))["s"]


def _rows(response) -> list[str]:
    """The ledger table's row ids, top to bottom."""
    return re.findall(r'<tr id="entry-(\d+)"', response.content.decode())


# ---------- what each role sees ----------


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_owners_and_admins_see_the_page_with_both_forms(member_of_acme, role):
    response = signed_in(member_of_acme(role)).get(URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>Billing</h1>" in page
    assert '<div class="bill-big" id="balance" title="$100.00">$100.00</div>' in page
    assert 'action="/w/acme/billing/credit/"' in page
    assert 'action="/w/acme/billing/budget/"' in page
    assert "test credit" in page


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER])
def test_developers_and_viewers_see_the_page_without_forms(member_of_acme, role):
    response = signed_in(member_of_acme(role)).get(URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert "$100.00" in page
    assert "Transactions" in page and "test credit" in page
    assert "/billing/credit/" not in page
    assert "/billing/budget/" not in page
    assert "Owners and admins add credit and change the limit" in page


def test_the_navigation_links_to_billing_as_a_finished_page(alice_client):
    page = alice_client.get(URL).content.decode()
    link = re.search(r'<a href="/w/acme/billing/"[^>]*>.*?</a>', page, re.S).group(0)
    assert 'aria-current="page"' in link
    assert "Soon" not in link


def test_the_summary_shows_this_months_spend_holds_and_the_limit(acme, alice, alice_client):
    _call(acme, "req_done", user=alice)
    _call(acme, "req_open", user=alice, settle=False)
    BillingAccount.objects.filter(workspace=acme).update(monthly_limit=10_000)  # one cent
    page = alice_client.get(URL).content.decode()
    month = timezone.now().strftime("%B")
    assert f"Spent in {month}" in page
    assert '<div class="bill-value" id="month-spend">$0.00</div>' in page  # $0.0035 rounds down
    assert "1 request so far" in page
    assert "$0.01 of it held: set aside for calls in progress" in page
    assert '<div class="bill-value" id="monthly-limit">$0.01</div>' in page
    assert "35% used" in page
    assert 'width="35"' in page  # the bar, as an SVG attribute: no inline style


def test_the_balance_is_what_is_left_after_charges_and_the_lease_is_held_apart(
    asgi_server, upstream_fleet, acme, alice, alice_client
):
    _key, secret = create_key(workspace=acme, name="Backend", created_by=alice)
    charge, held = tiny_call_with_the_lease_held(asgi_server.url, secret)
    left = ACME_CREDIT - charge
    page = alice_client.get(URL).content.decode()
    shown = f'<div class="bill-big" id="balance" title="{format_money(left, precise=True)}">'
    assert shown + f"{format_money(left)}</div>" in page
    assert (
        f'<div class="bill-stat-hint" id="held">{format_money(held, precise=True)} of it held: '
        "set aside for calls in progress</div>"
    ) in page
    # The ledger's last entry, the call's charge, says the same.
    row = re.search(r'<tr id="entry-\d+">.*?</tr>', page, re.S).group(0)
    assert "Charge" in row
    assert f'<td class="num hide-sm bill-after">{format_money(left, precise=True)}</td>' in row


def test_the_monthly_limit_says_what_is_left_after_charges_with_the_lease_held_apart(
    asgi_server, upstream_fleet, acme, alice, alice_client
):
    BillingAccount.objects.filter(workspace=acme).update(monthly_limit=40_000_000)
    _key, secret = create_key(workspace=acme, name="Backend", created_by=alice)
    charge, _held = tiny_call_with_the_lease_held(asgi_server.url, secret)
    page = alice_client.get(URL).content.decode()
    assert f"{format_money(40_000_000 - charge)} left this month" in page  # $40.00, not $36.00


def test_without_a_limit_it_says_so(alice_client):
    page = alice_client.get(URL).content.decode()
    assert '<div class="bill-value bill-value-muted" id="monthly-limit">No limit</div>' in page
    assert "Alerts at" in page and ">50%<" in page and ">80%<" in page and ">100%<" in page


def test_this_months_budget_alerts_show_as_a_notice(acme, alice, alice_client):
    key, _ = create_key(workspace=acme, name="Nightly batch", created_by=alice)
    month = ledger.month_of()
    AlertSent.objects.create(
        workspace=acme, month=month, threshold=50, spent=5_000_000, limit=10_000_000
    )
    AlertSent.objects.create(
        workspace=acme, month=month, threshold=80, spent=8_000_000, limit=10_000_000
    )
    AlertSent.objects.create(
        workspace=acme, api_key=key, month=month, threshold=100, spent=2_000_000, limit=2_000_000
    )
    AlertSent.objects.create(workspace=acme, month="2001-01", threshold=100, spent=1, limit=1)
    page = alice_client.get(URL).content.decode()
    assert "Acme has used 80% of its $10.00 monthly limit" in page
    assert "has used 50%" not in page  # the highest threshold per budget is enough
    assert "<strong>Nightly batch</strong> has used 100% of its $2.00 monthly budget" in page
    assert page.count('class="alert warning bill-alert"') == 1
    assert page.count('class="alert error bill-alert"') == 1


def test_an_empty_balance_is_called_out(acme, alice_client):
    ledger.hold(
        workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=ACME_CREDIT, request_id="r"
    )
    ledger.settle(request_id="r", cost=ACME_CREDIT)
    assert _balance(acme) == 0
    assert "The balance is empty." in alice_client.get(URL).content.decode()


# ---------- adding credit ----------


def test_an_owner_adds_credit_and_the_balance_changes_exactly(acme, alice, alice_client):
    response = alice_client.post(
        CREDIT_URL, {"amount": " 12.345678 ", "note": "Invoice 2026-014"}, headers=HX
    )
    assert response.status_code == 200
    assert _balance(acme) == ACME_CREDIT + 12_345_678
    assert _ledger_sum(acme) == _balance(acme)
    entry = LedgerEntry.objects.filter(workspace=acme).first()
    assert (entry.kind, entry.amount, entry.note) == (
        EntryKind.GRANT,
        12_345_678,
        "Invoice 2026-014",
    )
    assert entry.created_by == alice
    assert entry.balance_after == ACME_CREDIT + 12_345_678

    page = response.content.decode()
    assert "<html" not in page  # a partial: the card, the summary and the ledger
    assert page.lstrip().startswith('<section class="card bill-card" id="credit-card"')
    assert "Added $12.35; the balance is $112.35." in page
    assert '<div id="billing-summary" class="bill-summary" hx-swap-oob="true">' in page
    assert 'id="transactions"' in page and 'hx-swap-oob="true"' in page
    assert f'<tr id="entry-{entry.pk}" class="is-new">' in page
    assert "+$12.345678" in page
    assert "Alice Archer" in page
    assert response.headers["HX-Replace-Url"] == URL
    assert 'name="amount"' in page and 'value="12.345678"' not in page  # a fresh form


def test_an_admin_adds_credit_without_htmx_and_is_redirected_with_a_message(acme, member_of_acme):
    client = signed_in(member_of_acme(Role.ADMIN))
    response = client.post(CREDIT_URL, {"amount": "5", "note": "Top-up"}, follow=True)
    assert response.redirect_chain == [(URL, 302)]
    assert "Added $5.00; the balance is $105.00." in response.content.decode()
    assert _balance(acme) == ACME_CREDIT + 5_000_000


def test_adding_credit_says_what_is_left_while_a_worker_holds_a_lease(acme, alice_client):
    books.hold(workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=1, request_id="r")
    response = alice_client.post(CREDIT_URL, {"amount": "5", "note": "Top-up"}, headers=HX)
    page = response.content.decode()
    assert "Added $5.00; the balance is $105.00." in page
    assert '<div class="bill-big" id="balance" title="$105.00">$105.00</div>' in page


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("abc", "&#x27;abc&#x27; is not an amount; write it like 5 or 0.25."),
        ("-1", "The amount must be positive."),
        ("0", "The amount must be positive."),
        ("0.0000001", "has more than six decimals."),
        ("1.1234567", "has more than six decimals."),
        ("", "Enter how much credit to add"),
        ("NaN", "is not an amount"),
        ("Infinity", "is not an amount"),
        ("sNaN", "is not an amount"),
        ("1e100", "The most you can enter here is $1,000,000.00."),
        ("1e999999", "The most you can enter here is $1,000,000.00."),
        ("1000000.000001", "The most you can enter here is $1,000,000.00."),
        ("1e-999999999", "The amount must be positive."),
        ("1" * 40, "That is not an amount"),
    ],
)
def test_bad_amounts_are_refused_beside_the_field_and_write_nothing(
    acme, alice_client, amount, message
):
    entries = LedgerEntry.objects.count()
    response = alice_client.post(CREDIT_URL, {"amount": amount, "note": "Oops"}, headers=HX)
    assert response.status_code == 400
    page = response.content.decode()
    assert page.lstrip().startswith('<section class="card bill-card" id="credit-card"')
    error = re.search(r'<ul class="errorlist" id="id_amount_error">(.*?)</ul>', page).group(1)
    assert message in error
    assert 'aria-invalid="true"' in page
    assert 'value="Oops"' in page  # what was typed stays
    assert LedgerEntry.objects.count() == entries
    assert _balance(acme) == ACME_CREDIT


def test_a_note_is_required(acme, alice_client):
    response = alice_client.post(CREDIT_URL, {"amount": "10", "note": "   "}, headers=HX)
    assert response.status_code == 400
    assert "Say why the credit is added" in response.content.decode()
    assert _balance(acme) == ACME_CREDIT


def test_a_refused_amount_without_htmx_shows_the_whole_page_again(acme, alice_client):
    response = alice_client.post(CREDIT_URL, {"amount": "abc", "note": "x"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "<h1>Billing</h1>" in page and "is not an amount" in page
    assert _balance(acme) == ACME_CREDIT


# ---------- the monthly limit and alert thresholds ----------


def test_an_owner_sets_and_clears_the_monthly_limit(acme, alice, alice_client):
    response = alice_client.post(
        BUDGET_URL, {"monthly_limit": "250.5", "alert_thresholds": "50, 80, 100"}, headers=HX
    )
    assert response.status_code == 200
    account = BillingAccount.objects.get(workspace=acme)
    assert account.monthly_limit == 250_500_000
    assert account.balance == ACME_CREDIT
    page = response.content.decode()
    assert page.lstrip().startswith('<section class="card bill-card" id="budget-card"')
    assert "Saved: a monthly limit of $250.50." in page
    assert 'value="250.5"' in page
    assert '<div class="bill-value" id="monthly-limit">$250.50</div>' in page
    assert "Remove limit" in page
    event = AuditEvent.objects.get(action="billing.limit_changed")
    assert (event.actor, event.workspace) == (alice, acme)
    assert event.detail == {"old": None, "new": 250_500_000}
    assert not AuditEvent.objects.filter(action="billing.thresholds_changed").exists()

    response = alice_client.post(
        BUDGET_URL,
        {"monthly_limit": "250.5", "alert_thresholds": "50, 80, 100", "clear_limit": "1"},
        headers=HX,
    )
    assert response.status_code == 200
    assert BillingAccount.objects.get(workspace=acme).monthly_limit is None
    assert "Saved: no monthly limit." in response.content.decode()
    assert AuditEvent.objects.filter(action="billing.limit_changed").count() == 2

    # An empty field clears it too; saving what is already there logs nothing.
    alice_client.post(BUDGET_URL, {"monthly_limit": "", "alert_thresholds": "50, 80, 100"})
    assert AuditEvent.objects.filter(action="billing.limit_changed").count() == 2


def test_thresholds_are_cleaned_sorted_and_logged(acme, alice, alice_client):
    response = alice_client.post(
        BUDGET_URL, {"monthly_limit": "", "alert_thresholds": "90%, 25,75 ; 25"}, headers=HX
    )
    assert response.status_code == 200
    assert BillingAccount.objects.get(workspace=acme).alert_thresholds == [25, 75, 90]
    assert 'value="25, 75, 90"' in response.content.decode()
    event = AuditEvent.objects.get(action="billing.thresholds_changed")
    assert event.detail == {"old": [50, 80, 100], "new": [25, 75, 90]}
    assert event.actor == alice

    alice_client.post(BUDGET_URL, {"monthly_limit": "", "alert_thresholds": ""})
    assert BillingAccount.objects.get(workspace=acme).alert_thresholds == []
    assert "No budget alerts" in alice_client.get(URL).content.decode()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("monthly_limit", "abc", "is not an amount"),
        ("monthly_limit", "-5", "The amount must be positive."),
        ("monthly_limit", "0", "The amount must be positive."),
        ("monthly_limit", "1.0000001", "has more than six decimals."),
        ("alert_thresholds", "50, abc", "“abc” is not a whole percentage"),
        ("alert_thresholds", "0", "Each percentage is from 1 to 100; 0 is not."),
        ("alert_thresholds", "50, 101", "Each percentage is from 1 to 100; 101 is not."),
        ("alert_thresholds", "50.5", "“50.5” is not a whole percentage"),
        ("alert_thresholds", "-10", "“-10” is not a whole percentage"),
        ("alert_thresholds", ",".join(str(n) for n in range(1, 12)), "at most 10 percentages"),
    ],
)
def test_a_bad_limit_or_threshold_is_refused_and_nothing_is_saved(
    acme, alice_client, field, value, message
):
    data = {"monthly_limit": "100", "alert_thresholds": "10, 20"} | {field: value}
    response = alice_client.post(BUDGET_URL, data, headers=HX)
    assert response.status_code == 400
    page = response.content.decode()
    error = re.search(rf'<ul class="errorlist" id="id_{field}_error">(.*?)</ul>', page).group(1)
    assert message in error
    account = BillingAccount.objects.get(workspace=acme)
    assert (account.monthly_limit, account.alert_thresholds) == (None, [50, 80, 100])
    assert not AuditEvent.objects.exists()


def test_saving_the_budget_leaves_the_balance_alone(acme, alice, alice_client, monkeypatch):
    # Credit arrives between reading the account and saving the form: it must survive.
    from console import billing_forms

    real_save_by = billing_forms.BudgetForm.save_by

    def save_after_a_grant(form, user):
        ledger.grant(workspace=acme, amount=7, note="meanwhile", by=None)
        return real_save_by(form, user)

    monkeypatch.setattr(billing_forms.BudgetForm, "save_by", save_after_a_grant)
    alice_client.post(BUDGET_URL, {"monthly_limit": "30", "alert_thresholds": "80"})
    assert _balance(acme) == ACME_CREDIT + 7 == _ledger_sum(acme)
    assert BillingAccount.objects.get(workspace=acme).monthly_limit == 30_000_000


# ---------- transactions ----------


def test_transactions_are_paged_newest_first_with_real_links(acme, alice, alice_client):
    for n in range(30):
        ledger.grant(workspace=acme, amount=n + 1, note=f"grant {n}", by=alice)
    newest_first = list(
        LedgerEntry.objects.filter(workspace=acme)
        .order_by("-created_at", "-id")
        .values_list("pk", flat=True)
    )
    assert len(newest_first) == 31

    first = alice_client.get(URL)
    assert _rows(first) == [str(pk) for pk in newest_first[:25]]
    page = first.content.decode()
    older = f"{URL}?before={newest_first[24]}"
    assert f'<a class="btn sm" href="{older}" hx-get="{older}" rel="next">Older →</a>' in page
    assert '<span class="btn sm" aria-disabled="true">← Newer</span>' in page

    second = alice_client.get(older, headers=HX)
    assert _rows(second) == [str(pk) for pk in newest_first[25:]]
    page = second.content.decode()
    assert "<html" not in page
    assert page.lstrip().startswith('<section class="card bill-ledger"')
    assert second.headers["Vary"].count("HX-Request") == 1
    newer = f"{URL}?after={newest_first[25]}"
    assert f'href="{newer}"' in page
    assert '<span class="btn sm" aria-disabled="true">Older →</span>' in page

    assert _rows(alice_client.get(newer, headers=HX)) == [str(pk) for pk in newest_first[:25]]


def test_a_cursor_from_another_workspace_or_nonsense_shows_the_first_page(
    acme, globex, alice_client
):
    other = ledger.grant(workspace=globex, amount=1, note="globex", by=None)
    for cursor in (f"?before={other.pk}", "?after=abc", "?before=-1", "?before=٣"):
        response = alice_client.get(URL + cursor)
        assert response.status_code == 200
        assert "globex" not in response.content.decode()
        assert len(_rows(response)) == 1


def test_the_kind_filter_and_the_holds_toggle(acme, alice, alice_client):
    _call(acme, "req_filter", user=alice)
    ledger.refund(workspace=acme, amount=3_500, request_id="req_filter", note="sorry", by=alice)

    def kinds(query: str) -> list[str]:
        page = alice_client.get(URL + query, headers=HX).content.decode()
        return re.findall(r'<span class="badge[^"]*">([^<]+)</span>', page)

    assert kinds("") == ["Refund", "Charge", "Credit added"]
    assert kinds("?holds=1") == ["Refund", "Charge", "Hold released", "Hold", "Credit added"]
    assert kinds("?kind=hold") == ["Hold"]
    assert kinds("?kind=release") == ["Hold released"]
    assert kinds("?kind=charge") == ["Charge"]
    assert kinds("?kind=refund") == ["Refund"]
    assert kinds("?kind=grant") == ["Credit added"]
    assert kinds("?kind=bonus") == ["Refund", "Charge", "Credit added"]

    page = alice_client.get(URL + "?kind=charge").content.decode()
    assert (
        '<a href="/w/acme/billing/?kind=charge" hx-get="/w/acme/billing/?kind=charge" aria-current="true">Charges</a>'
        in page
    )
    assert "Show holds and releases" not in page
    page = alice_client.get(URL).content.decode()
    assert 'href="/w/acme/billing/?holds=1"' in page and 'aria-checked="false"' in page


def test_a_gateway_lease_shows_as_credit_held_for_calls_in_progress(acme, alice, alice_client):
    held = books.hold(
        workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=10_000, request_id="r1"
    )
    page = alice_client.get(URL + "?holds=1").content.decode()
    row = page[page.index(f'id="entry-{LedgerEntry.objects.get(kind="hold").pk}"') :]
    row = row[: row.index("</tr>")]
    assert "Credit held for calls in progress" in row and "API gateway" in row
    assert held.lease.request_id not in row  # not a link to a call that does not exist
    books.forget()


def test_each_entry_shows_amount_balance_request_link_note_and_who(acme, alice, alice_client):
    key, _ = create_key(workspace=acme, name="Backend", created_by=alice)
    _call(acme, "req_abc123", key=key, user=alice)
    page = alice_client.get(URL).content.decode()
    row = re.search(r'<tr id="entry-\d+">.*?</tr>', page, re.S).group(0)
    assert "Charge" in row
    assert '<a class="bill-request mono" href="/w/acme/usage/req_abc123/"' in row
    assert "-$0.0035" in row
    assert "$99.9965" in row
    assert "Backend" in row and key.masked in row
    grant = page[page.index("test credit") - 600 : page.index("test credit") + 600]
    assert "+$100.00" in grant and "System" in grant


def test_each_entry_shows_what_was_left_after_it_however_the_ledger_is_filtered(
    acme, alice, alice_client
):
    _call(acme, "req_a", user=alice)  # charged 3,500
    ledger.grant(workspace=acme, amount=5_000_000, note="top-up", by=alice)
    _call(acme, "req_b", user=alice, settle=False)  # 10,000 held
    ledger.refund(workspace=acme, amount=1_000, request_id="req_a", note="sorry", by=alice)

    def balances(query: str) -> list[str]:
        page = alice_client.get(URL + query, headers=HX).content.decode()
        return re.findall(r'<td class="num hide-sm bill-after">([^<]+)</td>', page)

    assert balances("") == ["$104.9975", "$104.9965", "$99.9965", "$100.00"]
    # Holds and releases set credit aside and give it back: what is left stays.
    assert balances("?holds=1") == [
        "$104.9975", "$104.9965", "$104.9965", "$99.9965", "$100.00", "$100.00", "$100.00"
    ]  # fmt: skip
    # The charge between the two grants still counts, though it is not listed.
    assert balances("?kind=grant") == ["$104.9965", "$100.00"]
    assert balances("?kind=hold") == ["$104.9965", "$100.00"]
    page = alice_client.get(URL).content.decode()
    assert '<div class="bill-big" id="balance" title="$104.9975">$105.00</div>' in page
    assert "$0.01 of it held: set aside for calls in progress" in page


def test_filtering_by_a_kind_with_no_entries_says_so(alice_client):
    page = alice_client.get(URL + "?kind=refund").content.decode()
    assert "No refund entries" in page


# ---------- spend per key and per member ----------


def test_the_spend_tables_reflect_this_months_usage(acme, alice, bob, alice_client):
    backend, _ = create_key(workspace=acme, name="Backend", created_by=bob, monthly_budget=14_000)
    create_key(workspace=acme, name="Idle key", created_by=alice)
    for n in range(2):
        _call(acme, f"req_key_{n}", key=backend, user=bob)
    _call(acme, "req_play", user=alice)

    page = alice_client.get(URL).content.decode()
    keys = re.search(r'<table class="table bill-table" id="key-spend">.*?</table>', page, re.S)
    rows = re.findall(r"<tr id=\"key-spend-[^\"]+\">.*?</tr>", keys.group(0), re.S)
    assert "Backend" in rows[0] and "$0.01" in rows[0]  # 7,000 micro-units round to a cent
    assert '<strong class="tone-ok">50%</strong> of $0.01' in rows[0]
    assert ">2<" in rows[0]
    assert "Idle key" in rows[1] and "No budget" in rows[1]

    members = re.search(
        r'<table class="table bill-table" id="member-spend">.*?</table>', page, re.S
    )
    rows = re.findall(r"<tr>.*?</tr>", members.group(0).split("<tbody>")[1], re.S)
    assert "Bob Baker" in rows[0] and "67%" in rows[0]
    assert "Alice Archer" in rows[1] and "33%" in rows[1]


def test_a_revoked_key_without_spend_is_left_out_of_the_key_table(acme, alice, alice_client):
    key, _ = create_key(workspace=acme, name="Gone", created_by=alice)
    key.revoke()
    assert "Gone" not in alice_client.get(URL).content.decode()


def test_a_viewer_is_not_sent_to_the_keys_page(member_of_acme):
    page = signed_in(member_of_acme(Role.VIEWER)).get(URL).content.decode()
    assert 'href="/w/acme/keys/"' not in page


# ---------- who may do what ----------


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER])
@pytest.mark.parametrize(
    ("url", "data"),
    [
        (CREDIT_URL, {"amount": "10", "note": "free money"}),
        (BUDGET_URL, {"monthly_limit": "", "alert_thresholds": "1"}),
    ],
)
def test_developers_and_viewers_may_not_change_anything(acme, member_of_acme, role, url, data):
    client = signed_in(member_of_acme(role))
    assert client.post(url, data, headers=HX).status_code == 403
    assert _balance(acme) == ACME_CREDIT
    assert LedgerEntry.objects.count() == 1
    assert BillingAccount.objects.get(workspace=acme).alert_thresholds == [50, 80, 100]


@pytest.mark.parametrize(
    "url", [URL, f"{URL}?kind=charge", f"{URL}?before=1", CREDIT_URL, BUDGET_URL]
)
def test_a_stranger_gets_404_on_every_billing_url(acme, charlie_client, url):
    assert charlie_client.get(url).status_code == 404
    assert charlie_client.get(url, headers=HX).status_code == 404
    assert charlie_client.post(url, {"amount": "10", "note": "x"}).status_code == 404
    assert _balance(acme) == ACME_CREDIT


def test_the_change_endpoints_only_take_post(alice_client):
    assert alice_client.get(CREDIT_URL).status_code == 405
    assert alice_client.get(BUDGET_URL).status_code == 405


def test_signed_out_visitors_are_sent_to_sign_in(acme, client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")
    assert client.post(CREDIT_URL, {"amount": "10", "note": "x"}).status_code == 302
    assert _balance(acme) == ACME_CREDIT


def test_the_largest_grant_is_accepted_to_the_micro_unit(acme, alice_client):
    response = alice_client.post(CREDIT_URL, {"amount": "1000000", "note": "Big"}, headers=HX)
    assert response.status_code == 200
    assert _balance(acme) == ACME_CREDIT + 1_000_000_000_000 == _ledger_sum(acme)
