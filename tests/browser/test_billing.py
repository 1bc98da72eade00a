"""Alice adds credit on the Billing page in Chromium; the page in both themes and on a phone."""

import re

import pytest
from playwright.sync_api import expect

from console import books, ledger, usage
from console.actions import create_key
from console.models import BillingAccount, LedgerEntry
from console.pricing import format_money
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import ACME_CREDIT, PASSWORD, tiny_call_with_the_lease_held

pytestmark = pytest.mark.browser


def _call(acme, request_id: str, *, model: str, tokens_out: int, key=None, user=None) -> None:
    """A finished chat call: a hold for its cost, then the booking that charges it."""
    cost = usage.cost_of(
        product="chat", model=model, tokens_in=40_000, tokens_out=tokens_out, units={}
    )
    ledger.hold(
        workspace_id=acme.pk,
        api_key_id=key.pk if key else None,
        key_budget=key.monthly_budget if key else None,
        amount=cost,
        request_id=request_id,
    )
    usage.book(
        request_id=request_id, workspace_id=acme.pk, api_key_id=key.pk if key else None,
        user_id=user.pk if user else None, source="api" if key else "playground",
        product="chat", endpoint="/v1/chat/completions", model=model, node="sim-1",
        status=200, stream=False, tokens_in=40_000, tokens_out=tokens_out, units={},
        latency_ms=900, ttft_ms=120, error="",
    )  # fmt: skip


def _a_month_of_use(acme, alice, bob) -> None:
    """Keys, calls, a refund and a limit: what a workspace looks like after some weeks."""
    BillingAccount.objects.filter(workspace=acme).update(monthly_limit=40_000_000)
    backend, _ = create_key(
        workspace=acme, name="Production backend", created_by=alice, monthly_budget=25_000_000
    )
    batch, _ = create_key(workspace=acme, name="Nightly batch", created_by=bob)
    create_key(workspace=acme, name="CI smoke tests", created_by=bob, monthly_budget=2_000_000)
    for n in range(4):
        request_id = f"req_{n:02d}a1b2c3d4e5f6a7b8c9d0e1f2a3b4"
        _call(acme, request_id, model="mira-pro", tokens_out=1_500_000, key=backend, user=alice)
    for n in range(3):
        request_id = f"req_{n:02d}f6e5d4c3b2a1f0e9d8c7b6a5f4e3"
        _call(acme, request_id, model="mira", tokens_out=900_000, key=batch, user=bob)
    _call(
        acme,
        "req_play0a1b2c3d4e5f6a7b8c9d0e1f2a3b4",
        model="mira-max",
        tokens_out=120_000,
        user=alice,
    )
    ledger.refund(
        workspace=acme,
        amount=1_370_000,
        request_id="req_02f6e5d4c3b2a1f0e9d8c7b6a5f4e3",
        note="Upstream timeout, charged twice",
        by=alice,
    )


def test_alice_adds_credit_and_sees_the_balance_and_the_transaction(alice, acme, new_page):
    page = new_page()
    sign_in(page, "alice@example.com", PASSWORD)
    page.get_by_role("link", name="Billing").click()
    expect(page.get_by_role("heading", name="Billing", exact=True)).to_be_visible()
    expect(page.locator("#balance")).to_have_text("$100.00")
    page.evaluate("window.__still_here = true")

    # A bad amount: the message appears beside the field and nothing is written.
    page.get_by_label("Amount").fill("12.3456789")
    page.get_by_label("Note").fill("Invoice 2026-014")
    page.get_by_role("button", name="Add credit").click()
    expect(page.locator("#id_amount_error")).to_have_text(
        "'12.3456789' has more than six decimals."
    )
    assert LedgerEntry.objects.filter(workspace=acme).count() == 1

    page.get_by_label("Amount").fill("25.50")
    page.get_by_role("button", name="Add credit").click()
    expect(page.get_by_text("Added $25.50; the balance is $125.50.")).to_be_visible()
    expect(page.locator("#balance")).to_have_text("$125.50")
    first_row = page.locator("#transactions tbody tr").first
    expect(first_row).to_contain_text("Invoice 2026-014")
    expect(first_row).to_contain_text("+$25.50")
    expect(first_row).to_contain_text("Alice Archer")
    expect(page.get_by_label("Amount")).to_have_value("")
    assert page.evaluate("window.__still_here") is True  # swapped in place, no reload
    assert BillingAccount.objects.get(workspace=acme).balance == 125_500_000
    assert page.errors == []


def test_alice_sets_a_limit_and_alerts_then_removes_the_limit(alice, acme, new_page):
    page = new_page()
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto("/w/acme/billing/")
    expect(page.locator("#monthly-limit")).to_have_text("No limit")
    page.get_by_role("textbox", name="Monthly limit").fill("30")
    page.get_by_label("Email alerts at").fill("101")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#id_alert_thresholds_error")).to_contain_text("101 is not")
    assert BillingAccount.objects.get(workspace=acme).monthly_limit is None

    page.get_by_label("Email alerts at").fill("75, 90")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved: a monthly limit of $30.00.")).to_be_visible()
    expect(page.locator("#monthly-limit")).to_have_text("$30.00")
    expect(page.locator("#billing-summary .chip")).to_have_text(["75%", "90%"])

    page.get_by_role("button", name="Remove limit").click()
    expect(page.get_by_text("Saved: no monthly limit.")).to_be_visible()
    expect(page.locator("#monthly-limit")).to_have_text("No limit")
    account = BillingAccount.objects.get(workspace=acme)
    assert (account.monthly_limit, account.alert_thresholds) == (None, [75, 90])
    assert page.errors == []


def test_the_ledger_filters_and_pages_in_place_with_real_addresses(alice, bob, acme, new_page):
    _a_month_of_use(acme, alice, bob)
    # The API gateway is holding credit for calls in progress.
    books.hold(workspace_id=acme.pk, api_key_id=None, key_budget=None, amount=5_000, request_id="r")
    page = new_page()
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto("/w/acme/billing/")
    page.evaluate("window.__still_here = true")
    ledger_card = page.locator("#transactions")
    ledger_card.get_by_role("link", name="Refunds").click()
    expect(page).to_have_url(re.compile(r"/w/acme/billing/\?kind=refund$"))
    expect(ledger_card.locator("tbody tr")).to_have_count(1)
    expect(ledger_card).to_contain_text("Upstream timeout, charged twice")
    ledger_card.get_by_role("link", name="All").click()
    ledger_card.get_by_role("switch", name="Show holds and releases").click()
    expect(page).to_have_url(re.compile(r"/w/acme/billing/\?holds=1$"))
    expect(ledger_card.get_by_text("Hold released").first).to_be_visible()
    expect(ledger_card.get_by_text("Credit held for calls in progress")).to_be_visible()
    assert page.evaluate("window.__still_here") is True
    page.go_back()
    expect(ledger_card.get_by_role("switch")).to_have_attribute("aria-checked", "false")
    assert page.errors == []
    page.goto("/w/acme/billing/?holds=1#transactions")
    screenshot(page, "billing-holds")


def test_after_a_call_the_balance_is_what_is_left_and_the_lease_shows_as_held(
    alice, acme, upstream_fleet, asgi_server, new_page
):
    _key, secret = create_key(workspace=acme, name="Production backend", created_by=alice)
    charge, held = tiny_call_with_the_lease_held(asgi_server.url, secret)
    page = new_page()
    sign_in(page, "alice@example.com", PASSWORD)
    expect(page.locator("#balance")).to_have_text("$100.00")  # the dashboard
    expect(page.locator("#held")).to_have_text(
        f"{format_money(held)} held: set aside for calls in progress"
    )
    screenshot(page, "dashboard-held")

    page.goto("/w/acme/billing/")
    expect(page.locator("#balance")).to_have_text("$100.00")
    expect(page.locator("#balance")).to_have_attribute(
        "title", format_money(ACME_CREDIT - charge, precise=True)
    )
    expect(page.locator("#held")).to_have_text(
        f"{format_money(held, precise=True)} of it held: set aside for calls in progress"
    )
    charge_row = page.locator("#transactions tbody tr").first
    expect(charge_row).to_contain_text("Charge")
    expect(charge_row.locator(".bill-after")).to_have_text(
        format_money(ACME_CREDIT - charge, precise=True)
    )
    screenshot(page, "billing-held")
    page.get_by_role("switch", name="Show holds and releases").click()
    expect(page.get_by_role("switch", name="Show holds and releases")).to_have_attribute(
        "aria-checked", "true"
    )
    screenshot(page, "billing-held-with-holds")
    assert page.errors == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screens_of_the_billing_page(alice, bob, acme, scheme, new_page):
    _a_month_of_use(acme, alice, bob)
    page = new_page(color_scheme=scheme)
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto("/w/acme/billing/")
    page.get_by_label("Amount").fill("50")
    page.get_by_label("Note").fill("Invoice 2026-015, paid by card")
    page.get_by_role("button", name="Add credit").click()
    expect(page.get_by_text("Added $50.00")).to_be_visible()
    screenshot(page, f"billing-{scheme}")

    phone = new_page(color_scheme=scheme, width=390, height=844)
    sign_in(phone, "alice@example.com", PASSWORD)
    phone.goto("/w/acme/billing/")
    expect(phone.locator("#balance")).to_be_visible()
    screenshot(phone, f"billing-phone-{scheme}")
    overflow = phone.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    assert overflow is False
    assert page.errors == [] and phone.errors == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_viewer_and_a_new_workspace_see_a_finished_page(
    alice, bob, acme, charlie, member_of_acme, scheme, new_page
):
    _a_month_of_use(acme, alice, bob)
    member_of_acme("viewer")
    viewer = new_page(color_scheme=scheme)
    sign_in(viewer, "viewer@example.com", PASSWORD)
    viewer.goto("/w/acme/billing/")
    expect(viewer.locator("#balance")).to_have_text("$78.10")
    expect(viewer.get_by_role("button", name="Add credit")).to_have_count(0)
    expect(viewer.get_by_text("Owners and admins add credit and change the limit")).to_be_visible()
    screenshot(viewer, f"billing-viewer-{scheme}")

    stranger = new_page(color_scheme=scheme)
    sign_in(stranger, "charlie@example.com", PASSWORD)
    stranger.goto("/w/globex/billing/")
    expect(stranger.locator("#balance")).to_have_text("$0.00")
    expect(stranger.get_by_text("The balance is empty.")).to_be_visible()
    expect(stranger.get_by_role("heading", name="No transactions yet")).to_be_visible()
    screenshot(stranger, f"billing-empty-{scheme}")
    assert viewer.errors == [] and stranger.errors == []
