"""A person signs in, invites a teammate, the teammate joins, and each role sees its pages."""

import re

import pytest
from django.core import mail
from playwright.sync_api import expect

from console.actions import create_key
from console.models import ApiKey
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


def _nav(page) -> list[str]:
    return [t.strip() for t in page.locator("nav.nav a").all_inner_texts()]


def test_invite_accept_and_what_each_role_sees(alice, new_page):
    owner = new_page()
    sign_in(owner, "alice@example.com", PASSWORD)
    expect(owner.get_by_role("heading", name="Welcome, Alice Archer")).to_be_visible()

    owner.get_by_role("link", name="Members", exact=True).click()
    owner.get_by_label("Email address").fill("dana@example.com")
    owner.locator("#invitations select[name=role]").select_option("viewer")
    owner.get_by_role("button", name="Send invitation").click()
    expect(owner.get_by_text("Invitation sent to dana@example.com.")).to_be_visible()
    expect(owner.locator("#invitations-table")).to_contain_text("dana@example.com")
    assert owner.errors == []

    link = re.search(r"https?://\S+/invite/\S+/", mail.outbox[-1].body).group(0)

    # The invitee opens the link in a browser of their own.
    dana = new_page(color_scheme="dark")
    dana.goto(link)
    expect(dana.get_by_role("heading", name="Join Acme")).to_be_visible()
    dana.get_by_label("Your name").fill("Dana Diaz")
    dana.get_by_label("Password", exact=True).fill("dana-strong-passphrase-1")
    dana.get_by_label("Password (again)").fill("dana-strong-passphrase-1")
    dana.get_by_role("button", name="Create account and join").click()
    expect(dana.get_by_text("Welcome to Acme.")).to_be_visible()

    # A viewer sees usage and spend, nothing else.
    assert [n.split("Soon")[0].strip() for n in _nav(dana)] == ["Dashboard", "Usage", "Billing"]
    dana.goto("/w/acme/members/")
    expect(dana.get_by_role("heading", name="You can't open this page")).to_be_visible()

    # The owner makes Dana a developer; the list updates in place.
    owner.reload()
    owner.locator("#members-table tr", has_text="dana@example.com").locator("select").select_option(
        "developer"
    )
    dana_row = owner.locator("#members-table tr", has_text="dana@example.com")
    expect(dana_row.get_by_role("status")).to_have_text("Role saved: developer.")
    expect(dana_row.locator("select")).to_have_value("developer")
    screenshot(owner, "members-role-saved")
    expect(owner.locator("#invitations-table")).to_have_count(0)

    dana.goto("/w/acme/")
    nav = [n.split("Soon")[0].strip() for n in _nav(dana)]
    assert nav == ["Dashboard", "Playground", "Usage", "API keys", "Billing", "Members"]
    dana.goto("/w/acme/members/")
    expect(dana.get_by_role("heading", name="Members")).to_be_visible()
    expect(dana.get_by_role("button", name="Send invitation")).to_have_count(0)
    assert dana.errors == []


def test_a_stranger_sees_nothing_of_another_workspace(alice, charlie, new_page):
    page = new_page()
    sign_in(page, "charlie@example.com", PASSWORD)
    page.goto("/w/acme/")
    expect(page.get_by_role("heading", name="Nothing here")).to_be_visible()
    page.goto("/w/globex/")
    page.get_by_label("Switch workspace").click()
    expect(page.locator(".switcher .menu")).not_to_contain_text("Acme")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screens_in_both_themes(alice, bob, scheme, new_page):
    page = new_page(color_scheme=scheme)
    page.goto("/accounts/login/")
    screenshot(page, f"sign-in-{scheme}")
    sign_in(page, "alice@example.com", PASSWORD)
    screenshot(page, f"dashboard-{scheme}")
    page.goto("/w/acme/members/")
    page.get_by_label("Email address").fill("erin@example.com")
    page.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_text("Invitation sent to erin@example.com.")).to_be_visible()
    screenshot(page, f"members-{scheme}")
    phone = new_page(color_scheme=scheme, width=390, height=844)
    sign_in(phone, "alice@example.com", PASSWORD)
    phone.get_by_label("Open navigation").click()
    expect(phone.get_by_role("link", name="Members", exact=True)).to_be_visible()
    screenshot(phone, f"phone-nav-{scheme}")
    assert page.errors == [] and phone.errors == []


def test_the_theme_choice_is_remembered(alice, new_page):
    page = new_page(color_scheme="light")
    sign_in(page, "alice@example.com", PASSWORD)
    page.get_by_label("Account menu").click()
    page.get_by_role("button", name="Dark").click()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(14, 14, 18)"


def test_a_bad_invitation_shows_its_error_beside_the_field(alice, new_page):
    page = new_page()
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto("/w/acme/members/")
    page.get_by_label("Email address").fill("not-an-email")
    page.get_by_role("button", name="Send invitation").click()
    expect(page.locator("#invite-email-errors")).to_contain_text("Enter a valid email address")
    assert page.errors == []


def test_removing_a_member_says_how_many_of_their_keys_stop_first(alice, bob, acme, new_page):
    for name in ("ci", "deploy"):
        create_key(workspace=acme, name=name, created_by=bob)
    page = new_page()
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto("/w/acme/members/")
    page.get_by_role("link", name="Remove bob@example.com").click()
    expect(page.get_by_role("heading", name="Remove bob@example.com from Acme?")).to_be_visible()
    expect(page.locator("#removal")).to_contain_text(
        "2 API keys they created in Acme will stop working at once"
    )
    screenshot(page, "member-remove-confirm")
    assert {k.status for k in ApiKey.objects.all()} == {"active"}

    page.get_by_role("button", name="Remove bob@example.com").click()
    expect(page.get_by_text("bob@example.com was removed from Acme.")).to_be_visible()
    expect(page.locator("#members-table")).not_to_contain_text("bob@example.com")
    assert {k.status for k in ApiKey.objects.all()} == {"revoked"}
    assert page.errors == []


def test_leaving_says_how_many_of_ones_keys_stop_first(bob, acme, alice, new_page):
    create_key(workspace=acme, name="ci", created_by=bob)
    page = new_page(color_scheme="dark")
    sign_in(page, "bob@example.com", PASSWORD)
    page.goto("/w/acme/members/")
    page.get_by_role("link", name="Leave", exact=True).click()
    expect(page.locator("#removal")).to_contain_text(
        "1 API key you created in Acme will stop working at once"
    )
    screenshot(page, "member-leave-confirm")
    page.get_by_role("button", name="Leave Acme").click()
    expect(page.get_by_text("You left Acme.")).to_be_visible()
    assert ApiKey.objects.get().status == "revoked"
    assert page.errors == []
