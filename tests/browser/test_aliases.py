"""An admin maps an agent's model name to a model of the fleet in Settings, then removes it."""

import pytest
from playwright.sync_api import expect

from console.models import AuditEvent, ModelAlias
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


def test_an_admin_adds_and_deletes_a_model_alias(alice, acme, upstream_fleet, new_page):
    page = new_page()
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto("/w/acme/settings/")
    section = page.locator("#aliases")
    expect(section.get_by_label("Model name asked for")).to_be_visible()

    # A bad pattern gets its message beside the field, and nothing is added.
    section.get_by_label("Model name asked for").fill("claude sonnet")
    section.get_by_label("Served by").select_option("mira")
    section.get_by_role("button", name="Add alias").click()
    expect(page.locator("#alias-pattern-errors")).to_contain_text("Use letters, digits")
    expect(section.get_by_label("Served by")).to_have_value("mira")
    assert not ModelAlias.objects.exists()
    screenshot(page, "settings-model-alias-refused")

    section.get_by_label("Model name asked for").fill("claude-*")
    section.get_by_label("Served by").select_option("mira-pro")
    section.get_by_role("button", name="Add alias").click()
    expect(section.get_by_role("status")).to_have_text(
        "Calls asking for claude-* are now served by mira-pro."
    )
    row = page.locator("#alias-table tr", has_text="claude-*")
    expect(row).to_contain_text("mira-pro")
    expect(page.locator("#alias-pattern-errors")).to_have_count(0)
    screenshot(page, "settings-model-aliases")

    # Deleting asks first; dismissing keeps the alias.
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Delete the alias claude-*").click()
    expect(row).to_be_visible()
    assert ModelAlias.objects.count() == 1

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete the alias claude-*").click()
    expect(section.get_by_role("status")).to_contain_text("claude-* → mira-pro is deleted")
    expect(page.locator("#alias-table")).to_have_count(0)
    assert not ModelAlias.objects.exists()
    actions = list(AuditEvent.objects.filter(workspace=acme).values_list("action", flat=True))
    assert sorted(actions) == ["alias.added", "alias.deleted"]
    assert page.errors == []
