"""Alice creates an API key, copies the one-time secret and revokes the key, in Chromium."""

import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from accounts.models import User, Workspace
from console.actions import create_key, disable_key, rotate_key
from console.models import ApiKey, UsageRecord
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

SECRET = re.compile(r"^sk-mira-[0-9a-f]{46}$")


def test_it_creates_reveals_copies_and_revokes_a_key(alice, new_page):
    page = new_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, "alice@example.com", PASSWORD)
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="No API keys yet")).to_be_visible()

    page.get_by_role("button", name="Create new key").first.click()
    dialog = page.locator("#key-create")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Create key").click()
    expect(dialog.get_by_text("Give the key a name")).to_be_visible()
    assert ApiKey.objects.count() == 0

    dialog.get_by_label("Name").fill("Production backend")
    dialog.get_by_label("Monthly budget").fill("25")
    dialog.get_by_role("button", name="Create key").click()

    reveal = page.get_by_role("dialog", name="Save your new key")
    expect(reveal).to_be_visible()
    expect(reveal).to_contain_text("will not be shown again")
    secret = reveal.locator("#key-secret").inner_text().strip()
    assert SECRET.match(secret)
    reveal.get_by_role("button", name="Copy").click()
    expect(reveal.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    reveal.get_by_role("button", name="Done").click()
    expect(reveal).to_be_hidden()

    key = ApiKey.objects.get()
    row = page.locator(f"#key-{key.pk}")
    expect(row).to_contain_text("Production backend")
    expect(row).to_contain_text(f"{secret[:16]}…{secret[-4:]}")
    expect(row).to_contain_text("$0.00")
    expect(row).to_contain_text("of $25.00")
    expect(row.locator(".badge.ok")).to_have_text("Active")

    # Revoking swaps the row in place: the marker set on the page survives, so no reload.
    page.evaluate("window.__still_here = true")
    row.get_by_role("button", name=re.compile("Actions for Production backend")).click()
    page.once("dialog", lambda d: d.accept())
    page.locator(f"#key-menu-{key.pk}").get_by_role("button", name="Revoke").click()
    expect(row.locator(".badge.danger")).to_have_text("Revoked")
    expect(page.locator("#key-audit")).to_contain_text("revoked")
    assert page.evaluate("window.__still_here") is True
    key.refresh_from_db()
    assert key.status == "revoked"
    assert secret not in page.content()
    assert page.errors == []


def test_it_rotates_a_key_with_a_grace_period(alice, acme, new_page):
    key, old_secret = create_key(workspace=acme, name="Worker", created_by=alice)
    page = new_page()
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto("/w/acme/keys/")
    page.get_by_role("button", name=re.compile("Actions for Worker")).click()
    page.get_by_role("button", name="Rotate…").click()
    rotate = page.locator(f"#key-rotate-{key.pk}")
    expect(rotate).to_be_visible()
    rotate.get_by_label("After 1 hour").check()
    rotate.get_by_role("button", name="Rotate key").click()

    reveal = page.get_by_role("dialog", name="Your rotated key is ready")
    expect(reveal).to_contain_text("keeps working for 1 hour")
    new_secret = reveal.locator("#key-secret").inner_text().strip()
    assert SECRET.match(new_secret) and new_secret != old_secret
    reveal.get_by_role("button", name="Done").click()
    expect(page.locator(f"#key-{key.pk}")).to_contain_text("expires in")
    assert page.errors == []


def test_it_searches_and_sorts_in_place(alice, acme, new_page):
    for name in ("alpha", "bravo", "charlie"):
        create_key(workspace=acme, name=name, created_by=alice)
    page = new_page()
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto("/w/acme/keys/")
    page.evaluate("window.__still_here = true")
    page.get_by_label("Search keys by name or prefix").fill("bra")
    expect(page.locator(".key-row")).to_have_count(1)
    expect(page.locator(".key-row")).to_contain_text("bravo")
    expect(page).to_have_url(re.compile(r"[?&]q=bra(&|$)"))
    page.get_by_label("Search keys by name or prefix").fill("")
    expect(page.locator(".key-row")).to_have_count(3)
    page.get_by_role("link", name="Name").click()
    expect(page.locator(".key-row .key-name strong").first).to_have_text("alpha")
    page.get_by_role("link", name="Name").click()
    expect(page.locator(".key-row .key-name strong").first).to_have_text("charlie")
    expect(page).to_have_url(re.compile(r"[?&]sort=-name(&|$)"))
    assert page.evaluate("window.__still_here") is True
    assert page.errors == []


def _fill_workspace(workspace: Workspace, alice: User, bob: User) -> None:
    """Keys in every state, with some spend, for the screenshots."""
    prod, _ = create_key(
        workspace=workspace,
        name="Production backend",
        created_by=alice,
        rpm_limit=600,
        monthly_budget=250_000_000,
    )
    create_key(
        workspace=workspace,
        name="Staging",
        created_by=bob,
        scopes=["chat", "embeddings"],
        allowed_models=["mira-pro", "mira-embed"],
    )
    ci, _ = create_key(workspace=workspace, name="CI smoke tests", created_by=bob, tpm_limit=20_000)
    disable_key(key=ci, by=alice)
    notebook, _ = create_key(workspace=workspace, name="Data notebook", created_by=alice)
    rotate_key(key=notebook, by=alice, grace=timedelta(hours=24))
    UsageRecord.objects.create(
        request_id="req_1",
        workspace=workspace,
        api_key=prod,
        product="chat",
        endpoint="/v1/chat/completions",
        model="mira-pro",
        status=200,
        cost=12_345_678,
    )


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screens_of_the_keys_page(alice, bob, acme, scheme, new_page):
    # Playwright's screenshots leave empty style attributes on inputs, which htmx would copy
    # onto swapped-in elements (a CSP report), so each screenshot ends a page's htmx use.
    _fill_workspace(acme, alice, bob)
    page = new_page(color_scheme=scheme)
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto("/w/acme/keys/")
    page.get_by_role("button", name="Create new key").first.click()
    page.locator("#key-create").get_by_label("Name").fill("Mobile app")
    page.locator("#key-create").get_by_role("button", name="Create key").click()
    expect(page.get_by_role("dialog", name="Save your new key")).to_be_visible()
    screenshot(page, f"keys-reveal-{scheme}")

    page.goto("/w/acme/keys/")
    expect(page.locator(".key-row")).to_have_count(6)
    screenshot(page, f"keys-{scheme}")

    page.goto("/w/acme/keys/")
    page.get_by_role("button", name="Create new key").first.click()
    page.locator("#key-create").get_by_label("Requests / minute").fill("-5")
    page.locator("#key-create").get_by_label("Monthly budget").fill("abc")
    page.locator("#key-create").get_by_role("button", name="Create key").click()
    expect(page.locator("#key-create")).to_contain_text("Enter an amount such as 25 or 2.50")
    screenshot(page, f"keys-create-{scheme}")

    page.goto("/w/acme/keys/")
    page.get_by_role("button", name=re.compile("Actions for Production backend")).click()
    page.get_by_role("button", name="Rotate…").click()
    expect(page.get_by_role("button", name="Rotate key")).to_be_visible()
    screenshot(page, f"keys-rotate-{scheme}")

    phone = new_page(color_scheme=scheme, width=390, height=844)
    sign_in(phone, "alice@example.com", PASSWORD)
    phone.goto("/w/acme/keys/")
    screenshot(phone, f"keys-phone-{scheme}")
    phone.get_by_role("button", name=re.compile("Actions for Staging")).click()
    screenshot(phone, f"keys-phone-menu-{scheme}")
    assert page.errors == [] and phone.errors == []
