"""The Fetch page in Chromium: a local article (allow-listed, on loopback) comes back rendered
and as raw Markdown with its cost, a refused URL is explained beside the field, and "Send to
chat" opens a chat whose system prompt holds the page; each fetch is kept in the history,
reopens from it and is deleted there, and the form's request shows as code."""

import pytest
from playwright.sync_api import Page, expect

from console.models import UsageRecord
from playground.models import Conversation, FetchRun
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import PASSWORD, settle_books

pytestmark = pytest.mark.browser

PAGE = "/w/acme/playground/fetch/"


def _open(new_page, color_scheme: str = "light", width: int = 1440, height: int = 900) -> Page:
    page = new_page(color_scheme=color_scheme, width=width, height=height)
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto(PAGE)
    expect(page.get_by_role("heading", name="Fetch")).to_be_visible()
    return page


def _fetch(page: Page, url: str) -> None:
    page.get_by_label("URL").fill(url)
    page.get_by_role("button", name="Fetch", exact=True).click()


def _article(site) -> str:
    return f"http://site.test:{site.server_address[1]}/article"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_an_article_is_shown_rendered_and_raw_with_its_cost(
    alice, new_page, upstream_fleet, site, fetch_settings, scheme
):
    page = _open(new_page, color_scheme=scheme)
    screenshot(page, f"fetch-empty-{scheme}")
    _fetch(page, _article(site))
    expect(page.locator("#fetch-title")).to_have_text("Tides of the North Sea", timeout=20_000)
    rendered = page.locator("#fetch-rendered")
    expect(rendered.get_by_role("heading", name="Why the range grows")).to_be_visible()
    expect(rendered.get_by_role("link", name="the Wash")).to_have_attribute(
        "href", "https://example.org/wash"
    )
    expect(rendered).not_to_contain_text("Gift shop")
    expect(page.locator("#fetch-cost")).to_have_text("$0.001")
    expect(page.locator("#fetch-length")).to_contain_text("characters")
    screenshot(page, f"fetch-rendered-{scheme}")
    page.get_by_role("button", name="Markdown").click()
    expect(page.locator("#fetch-raw")).to_be_visible()
    expect(rendered).to_be_hidden()
    expect(page.locator("#fetch-raw-text")).to_contain_text("## Why the range grows")
    expect(page.locator("#fetch-raw-text")).to_contain_text("[the Wash](https://example.org/wash)")
    screenshot(page, f"fetch-raw-{scheme}")
    settle_books()
    record = UsageRecord.objects.get(product="fetch")
    assert record.source == "playground" and record.cost == 1_000
    assert page.errors == []


def test_a_refused_url_is_explained_beside_the_field(
    alice, new_page, upstream_fleet, listener, fetch_settings
):
    page = _open(new_page)
    _fetch(page, f"http://127.0.0.3:{listener.server_address[1]}/")
    expect(page.locator("#fetch-url-error")).to_contain_text("a loopback address")
    screenshot(page, "fetch-refused")
    _fetch(page, "ftp://example.com/")
    expect(page.locator("#fetch-url-error")).to_contain_text("Only http and https")
    expect(page.get_by_label("URL")).to_have_value("ftp://example.com/")
    assert listener.connections == []
    settle_books()
    assert not UsageRecord.objects.filter(product="fetch").exists()
    assert page.errors == []


def test_send_to_chat_opens_a_chat_with_the_page_as_context(
    alice, new_page, upstream_fleet, site, fetch_settings
):
    page = _open(new_page, width=390, height=844)
    _fetch(page, _article(site))
    expect(page.locator("#fetch-title")).to_have_text("Tides of the North Sea", timeout=20_000)
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    screenshot(page, "fetch-phone")
    page.get_by_role("button", name="Send to chat").click()
    page.wait_for_url("**/playground/?c=*")
    conversation = Conversation.objects.get(user=alice)
    assert conversation.title == "Page: Tides of the North Sea"
    system = conversation.settings["system"]
    assert _article(site) in system and "amphidromic points" in system
    expect(page.locator("#pg-system")).to_have_value(system)
    assert page.errors == []


@pytest.mark.parametrize(
    ("scheme", "width", "height"), [("light", 1440, 900), ("dark", 1440, 900), ("light", 390, 844)]
)
def test_fetches_reopen_from_the_history_and_show_as_code(
    alice, new_page, upstream_fleet, site, fetch_settings, scheme, width, height
):
    page = _open(new_page, color_scheme=scheme, width=width, height=height)
    notes = f"http://site.test:{site.server_address[1]}/notes.txt"
    _fetch(page, _article(site))
    expect(page.locator("#fetch-title")).to_have_text("Tides of the North Sea", timeout=20_000)
    _fetch(page, notes)
    expect(page.locator("#fetch-raw-text")).to_contain_text("second line", timeout=20_000)
    article, text = FetchRun.objects.order_by("pk")

    # Both fetches are in the history, newest first; the article reopens from it.
    page.get_by_role("button", name="History").click()
    history = page.locator("#fetch-history")
    expect(history).to_be_visible()
    expect(history.locator(".pg-history-item")).to_have_count(2)
    expect(history.locator(".pg-history-item").first).to_contain_text("notes.txt")
    expect(history.get_by_role("link", name="Tides of the North Sea")).to_contain_text("$0.001")
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    suffix = f"{scheme}-phone" if width < 600 else scheme
    screenshot(page, f"fetch-history-{suffix}")
    history.get_by_role("link", name="Tides of the North Sea").click()
    page.wait_for_url(f"**{PAGE}?run={article.pk}")
    expect(page.locator("#fetch-title")).to_have_text("Tides of the North Sea")
    expect(page.locator("#fetch-rendered")).to_contain_text("amphidromic points")
    expect(page.get_by_label("URL")).to_have_value(_article(site))
    expect(page.get_by_label("Up to (characters)")).to_have_value("20000")

    # View code shows the call the form would make, with what is in it now.
    page.get_by_label("Up to (characters)").fill("1500")
    page.get_by_role("button", name="View code").click()
    dialog = page.locator("#fetch-code-pop")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#code-curl")).to_contain_text("/v1/fetch")
    expect(dialog.locator("#code-curl")).to_contain_text(f'"url": "{_article(site)}"')
    expect(dialog.locator("#code-curl")).to_contain_text('"max_length": 1500')
    dialog.locator("summary", has_text="Python").click()
    expect(dialog.locator("#code-python")).to_contain_text('print(answer["content"])')
    screenshot(page, f"fetch-code-{suffix}")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    # The other fetch is deleted from the history; the open one stays.
    page.get_by_role("button", name="History").click()
    page.once("dialog", lambda d: d.accept())
    history.get_by_role("button", name="Delete the fetch of").first.click()
    expect(history.locator(".pg-history-item")).to_have_count(1)
    expect(history).not_to_contain_text("notes.txt")
    assert list(FetchRun.objects.all()) == [article] and text.pk != article.pk
    assert page.errors == []
