"""The Fetch page's views: a fetch as the signed-in member, and "Send to chat"."""

from playground.models import Conversation


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
