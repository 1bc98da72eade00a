"""The Fetch page's views: a fetch as the signed-in member, kept in the member's history with
its page (reopened, shown as code, deleted; nobody else's to see), and "Send to chat"."""

import re

import pytest

from console.models import UsageRecord
from playground.models import Conversation, FetchRun
from tests.conftest import settle_books
from tests.playground.conftest import text_of

FETCH = "/w/acme/playground/fetch/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def _article(site) -> str:
    return f"http://site.test:{site.server_address[1]}/article"


def url_field(page: str) -> str:
    return re.search(r'<input type="text" name="url"[^>]*>', page).group(0)


def fetch(client, url: str, max_length: str = "5000"):
    return client.post(FETCH + "run/", {"url": url, "max_length": max_length}, **HTMX)


def test_the_page_lists_fetch_among_the_playground_products(alice_client):
    page = alice_client.get("/w/acme/playground/fetch/").content.decode()
    assert 'href="/w/acme/playground/fetch/" aria-current="page"' in page
    assert 'id="fetch-form"' in page


def test_send_to_chat_makes_a_conversation_of_the_members_own(alice_client, alice, bob):
    response = alice_client.post(
        "/w/acme/playground/fetch/to-chat/",
        {"url": "https://example.com/tides", "title": "Tides", "content": "# Tides\n\nTwo a day."},
    )
    conversation = Conversation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/w/acme/playground/?c={conversation.pk}"
    assert conversation.user == alice and conversation.title == "Page: Tides"
    assert "https://example.com/tides" in conversation.settings["system"]
    assert conversation.settings["system"].endswith("# Tides\n\nTwo a day.")
    assert conversation.settings["columns"][0]["model"] == "mira"


def test_send_to_chat_without_the_page_is_refused(alice_client):
    response = alice_client.post("/w/acme/playground/fetch/to-chat/", {"url": "https://a.example/"})
    assert response.status_code == 400 and b"missing" in response.content
    assert not Conversation.objects.exists()


def test_a_url_refused_by_its_form_is_shown_beside_the_field(alice_client):
    response = alice_client.post(
        "/w/acme/playground/fetch/run/", {"url": "http://0x7f.1/", "max_length": "1000"},
        headers={"HX-Request": "true"},
    )  # fmt: skip
    page = response.content.decode()
    assert response.status_code == 400
    assert 'id="fetch-url-error"' in page and "decimal, octal, hex" in page


@pytest.mark.django_db(transaction=True)
def test_a_fetch_is_kept_with_its_page_and_shown_in_the_history(
    alice, alice_client, upstream_fleet, site, fetch_settings
):
    response = fetch(alice_client, _article(site))
    assert response.status_code == 200
    page = response.content.decode()
    run = FetchRun.objects.get()
    assert run.user == alice and run.workspace.slug == "acme"
    assert run.request == {"url": _article(site), "max_length": 5000}
    assert run.result["title"] == "Tides of the North Sea"
    assert run.result["final_url"] == _article(site)
    assert "## Why the range grows" in run.result["content"]
    assert "Gift shop" not in run.result["content"]
    assert 'id="fetch-title">Tides of the North Sea<' in page
    assert re.search(r'<nav id="fetch-history" [^>]*hx-swap-oob="true"', page)
    assert f'href="{FETCH}?run={run.pk}" aria-current="page"' in page
    settle_books()
    record = UsageRecord.objects.get(request_id=run.request_id)
    assert record.source == "playground" and record.product == "fetch"
    assert run.cost == record.cost == 1_000


@pytest.mark.django_db(transaction=True)
def test_a_fetch_reopens_with_its_page_and_its_form(
    alice_client, upstream_fleet, site, fetch_settings
):
    fetch(alice_client, _article(site), max_length="3000")
    run = FetchRun.objects.get()
    page = alice_client.get(f"{FETCH}?run={run.pk}").content.decode()
    assert 'id="fetch-title">Tides of the North Sea<' in page
    assert "amphidromic points" in text_of(page)
    assert f'value="{_article(site)}"' in url_field(page) and 'value="3000"' in page
    assert f'href="{FETCH}?run={run.pk}" aria-current="page"' in page
    # Without ?run= the latest fetch is shown, the form left blank for a new one.
    page = alice_client.get(FETCH).content.decode()
    assert 'id="fetch-title">Tides of the North Sea<' in page
    assert "value=" not in url_field(page)


@pytest.mark.django_db(transaction=True)
def test_a_fetch_can_be_deleted_from_the_history(
    alice_client, upstream_fleet, site, fetch_settings
):
    fetch(alice_client, _article(site))
    fetch(alice_client, f"http://site.test:{site.server_address[1]}/notes.txt")
    notes, article = FetchRun.objects.all()
    response = alice_client.post(f"{FETCH}runs/{article.pk}/delete/", {"open": ""}, **HTMX)
    assert response.status_code == 200
    listed = text_of(response.content.decode())
    assert "notes.txt" in listed and "Tides of the North Sea" not in listed
    assert list(FetchRun.objects.all()) == [notes]
    # Deleting the run that is open sends the page back to a new fetch.
    response = alice_client.post(f"{FETCH}runs/{notes.pk}/delete/", {"open": notes.pk}, **HTMX)
    assert response["HX-Redirect"] == FETCH
    assert not FetchRun.objects.exists()
    assert "No pages fetched yet" in alice_client.get(FETCH).content.decode()


@pytest.mark.django_db(transaction=True)
def test_other_members_and_workspaces_see_no_fetches(
    alice_client, bob_client, charlie_client, upstream_fleet, site, fetch_settings
):
    fetch(alice_client, _article(site))
    run = FetchRun.objects.get()
    for client in (bob_client, charlie_client):
        assert client.get(f"{FETCH}?run={run.pk}").status_code == 404
        assert client.get(f"{FETCH}code/?run={run.pk}").status_code == 404
        assert client.post(f"{FETCH}runs/{run.pk}/delete/", **HTMX).status_code == 404
    assert "Tides of the North Sea" not in bob_client.get(FETCH).content.decode()
    assert alice_client.get(f"{FETCH}?run=nope").status_code == 404
    assert FetchRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("url", "max_length"),
    [("http://127.0.0.1/", "5000"), ("ftp://example.com/", "5000"), ("https://a.example/", "5")],
)
def test_a_refused_fetch_keeps_no_run(
    alice_client, upstream_fleet, fetch_settings, url, max_length
):
    response = fetch(alice_client, url, max_length)
    assert response.status_code == 400 and response["HX-Retarget"] == "#fetch-form"
    assert not FetchRun.objects.exists()
    settle_books()
    assert not UsageRecord.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_fetch_shows_as_code_from_the_form_and_from_its_run(
    alice_client, upstream_fleet, site, fetch_settings
):
    form = {"url": "https://example.com/tides", "max_length": "1200"}
    code = text_of(alice_client.post(FETCH + "code/", form).content.decode())
    assert "curl http://testserver/v1/fetch" in code
    assert '"url": "https://example.com/tides"' in code and '"max_length": 1200' in code
    assert 'client.post(\n    "/fetch",' in code and 'client.post("/fetch", {' in code
    assert 'print(answer["content"])' in code and "console.log(answer.content)" in code
    assert "$MIRA_API_KEY" in code and "fetch among them" in code
    problem = text_of(alice_client.post(FETCH + "code/", {"max_length": "1200"}).content.decode())
    assert problem.startswith("Fill in the form first:") and "required" in problem
    assert not FetchRun.objects.exists()
    fetch(alice_client, _article(site), max_length="2500")
    run = FetchRun.objects.get()
    code = text_of(alice_client.get(f"{FETCH}code/?run={run.pk}").content.decode())
    assert f'"url": "{_article(site)}"' in code and '"max_length": 2500' in code
