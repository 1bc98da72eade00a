"""Alice reads her workspace's usage: charts, a filter that changes them in place, the
request log and one call's detail, in both themes and on a phone."""

import io

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from tests.browser.conftest import screenshot, sign_in
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture
def history(acme, alice):
    """A month of made-up calls in Acme."""
    call_command(
        "seedusage", records=4000, workspace="acme", days=30, seed=11, stdout=io.StringIO()
    )


def _open_usage(page) -> None:
    sign_in(page, "alice@example.com", PASSWORD)
    page.locator("nav.nav").get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", name="Usage", exact=True)).to_be_visible()


def test_alice_filters_her_usage_in_place_and_opens_a_call(history, new_page):
    page = new_page()
    _open_usage(page)
    spend = page.locator("#chart-spend")
    expect(spend.locator("rect.chart-bar").first).to_be_visible()
    expect(spend.locator("rect.chart-bar title").first).to_contain_text("Day total:")
    expect(spend.locator(".chart-legend")).to_contain_text("mira-max")
    expect(page.locator("#log tbody.log-page tr")).to_have_count(50)
    before = page.locator('[data-total="requests"]').get_attribute("data-value")
    screenshot(page, "usage-light")

    # Filters answer with htmx: the page is swapped in place, not reloaded.
    page.evaluate("window.stillHere = true")
    page.get_by_label("Product").select_option("embeddings")
    expect(spend.locator(".chart-legend")).not_to_contain_text("mira-max")
    expect(spend.locator(".chart-legend")).to_contain_text("mira-embed")
    expect(page).to_have_url("/w/acme/usage/?product=embeddings")
    after = page.locator('[data-total="requests"]').get_attribute("data-value")
    assert int(after) < int(before)
    assert page.evaluate("window.stillHere") is True

    page.get_by_role("link", name="Product", exact=True).click()
    expect(page.locator("#chart-spend .chart-legend")).to_contain_text("Embeddings")
    expect(page).to_have_url("/w/acme/usage/?product=embeddings&group=product")

    # Older calls load under the newest ones.
    page.get_by_role("link", name="Older calls").click()
    expect(page.locator("#log tbody.log-page tr")).to_have_count(100)
    assert page.evaluate("window.stillHere") is True

    first = page.locator("#log a.call-link").first
    first.click()
    expect(page.get_by_role("heading", name="Every field of this call")).to_be_visible()
    expect(page.locator("#call-cost")).to_contain_text("$")
    expect(page.locator(".detail-list")).to_contain_text("/v1/embeddings")
    page.get_by_role("link", name="Back to usage").click()
    expect(page).to_have_url("/w/acme/usage/?product=embeddings&group=product")
    assert page.errors == []


def test_the_usage_page_in_dark_and_on_a_phone(history, new_page):
    page = new_page(color_scheme="dark")
    _open_usage(page)
    expect(page.locator("#chart-spend rect.chart-bar").first).to_be_visible()
    screenshot(page, "usage-dark")

    phone = new_page(width=390, height=844)
    sign_in(phone, "alice@example.com", PASSWORD)
    phone.goto("/w/acme/usage/")
    expect(phone.locator("#chart-spend rect.chart-bar").first).to_be_visible()
    fits = phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert fits, "the page scrolls sideways on a phone"
    screenshot(phone, "usage-phone")

    detail = new_page(color_scheme="dark")
    sign_in(detail, "alice@example.com", PASSWORD)
    detail.goto("/w/acme/usage/")
    detail.locator("#log a.call-link").first.click()
    expect(detail.get_by_role("heading", name="Every field of this call")).to_be_visible()
    screenshot(detail, "usage-detail-dark")
    assert page.errors == [] and phone.errors == [] and detail.errors == []


def test_a_workspace_without_usage_shows_the_empty_state(alice, new_page):
    page = new_page()
    _open_usage(page)
    expect(page.get_by_role("heading", name="No usage yet")).to_be_visible()
    expect(page.get_by_role("link", name="Create an API key")).to_be_visible()
    screenshot(page, "usage-empty")
    assert page.errors == []
