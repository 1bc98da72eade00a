"""The playground page, its history, presets, images and "View code": each member sees their own
conversations, presets are shared only when their owner says so, and other workspaces see nothing."""

import ast
import json

import pytest

from accounts.roles import Role as MemberRole
from playground.models import Conversation, Message, Preset, Role, Status
from tests.conftest import signed_in
from tests.playground.conftest import png_data_uri, settings_for

PAGE = "/w/acme/playground/"


@pytest.fixture
def conversation(alice, acme) -> Conversation:
    """Alice's conversation: a question, a reply and a regenerated reply (the one she looks at)."""
    conversation = Conversation.objects.create(
        workspace=acme, user=alice, title="Rivers of Europe", settings=settings_for()
    )
    question = Message.objects.create(
        conversation=conversation, role=Role.USER, content="Name a river", images=[png_data_uri()]
    )
    Message.objects.create(
        conversation=conversation, parent=question, role=Role.ASSISTANT, content="The **Rhine**.",
        model="mira", params={"model": "mira", "temperature": 0.2, "system": "Be brief."},
        request_id="req_first", tokens_in=12, tokens_out=3, cost=21, ttft_ms=40, duration_ms=140,
    )  # fmt: skip
    second = Message.objects.create(
        conversation=conversation, parent=question, role=Role.ASSISTANT, content="The *Danube*.",
        model="mira", params={"model": "mira"}, request_id="req_second", tokens_in=12,
        tokens_out=4, cost=25, ttft_ms=35, duration_ms=135,
    )  # fmt: skip
    conversation.settings["columns"][0]["leaf"] = second.pk
    conversation.save()
    return conversation


def test_the_page_offers_the_fleets_chat_models(alice_client, upstream_fleet):
    response = alice_client.get(PAGE)
    assert response.status_code == 200
    page = response.content.decode()
    assert '<option value="mira-pro">' in page and "mira-embed" not in page
    assert "Start a conversation" in page
    assert 'data-socket="/ws/playground/acme/"' in page


def test_a_viewer_may_not_use_the_playground(member_of_acme, upstream_fleet):
    viewer = member_of_acme(MemberRole.VIEWER)
    assert signed_in(viewer).get(PAGE).status_code == 403


def test_a_stranger_cannot_even_see_the_page(charlie_client, upstream_fleet):
    assert charlie_client.get(PAGE).status_code == 404


def test_a_conversation_reopens_where_it_was(alice_client, conversation, upstream_fleet):
    page = alice_client.get(f"{PAGE}?c={conversation.pk}").content.decode()
    assert "Rivers of Europe" in page
    assert "<em>Danube</em>" in page and "Rhine" not in page.split('id="pg-columns"')[1]
    assert "2/2" in page
    assert "2 calls · 31 tokens · $0.000046" in page
    image = conversation.messages.get(role=Role.USER)
    assert f"/w/acme/playground/images/{image.pk}/0/" in page and "data:image" not in page


def test_bob_cannot_open_or_delete_alices_conversation(bob, conversation, upstream_fleet):
    bob_client = signed_in(bob)
    assert bob_client.get(f"{PAGE}?c={conversation.pk}").status_code == 404
    delete = f"{PAGE}conversations/{conversation.pk}/delete/"
    assert bob_client.post(delete).status_code == 404
    image = conversation.messages.get(role=Role.USER)
    assert bob_client.get(f"{PAGE}images/{image.pk}/0/").status_code == 404
    history = bob_client.get(PAGE, headers={"HX-Request": "true", "HX-Target": "pg-history"})
    assert "Rivers of Europe" not in history.content.decode()
    assert Conversation.objects.count() == 1


def test_charlie_sees_nothing_of_acme(charlie_client, conversation, upstream_fleet):
    assert charlie_client.get(f"{PAGE}?c={conversation.pk}").status_code == 404
    assert charlie_client.get(f"/w/globex/playground/?c={conversation.pk}").status_code == 404
    image = conversation.messages.get(role=Role.USER)
    assert charlie_client.get(f"/w/globex/playground/images/{image.pk}/0/").status_code == 404
    response = charlie_client.post("/w/globex/playground/code/", {"state": _state(conversation)})
    assert response.status_code == 404


def test_alice_sees_her_image(alice_client, conversation):
    image = conversation.messages.get(role=Role.USER)
    response = alice_client.get(f"{PAGE}images/{image.pk}/0/")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")
    assert alice_client.get(f"{PAGE}images/{image.pk}/1/").status_code == 404


def test_deleting_a_conversation_removes_its_branches(alice_client, conversation):
    response = alice_client.post(
        f"{PAGE}conversations/{conversation.pk}/delete/", headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert "No saved conversations yet" in response.content.decode()
    assert not Message.objects.exists()


def _state(conversation: Conversation | None, draft: str = "", **settings) -> str:
    return json.dumps(
        {
            "conversation": conversation.pk if conversation else None,
            "settings": conversation.settings if conversation else settings_for(**settings),
            "column": 0,
            "draft": draft,
        }
    )


def _snippet(page: str, name: str) -> str:
    import html
    import re

    code = re.search(rf'<code id="pg-code-{name}">(.*?)</code>', page, re.S).group(1)
    return html.unescape(re.sub(r"<[^>]+>", "", code))


def test_view_code_shows_the_exact_request_of_the_last_reply(alice_client, conversation):
    first = conversation.messages.get(request_id="req_first")
    conversation.settings["columns"][0]["leaf"] = first.pk
    conversation.save()
    page = alice_client.post(f"{PAGE}code/", {"state": _state(conversation)}).content.decode()
    curl = _snippet(page, "curl")
    assert curl.startswith("curl http://testserver/v1/chat/completions")
    assert "Authorization: Bearer $MIRA_API_KEY" in curl
    body = json.loads(curl.split("-d '", 1)[1].strip().rstrip("'"))
    assert body["model"] == "mira" and body["temperature"] == 0.2
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1]["content"][0] == {"type": "text", "text": "Name a river"}
    assert body["messages"][1]["content"][1]["image_url"]["url"].endswith("…")
    assert "Image data is shortened here" in page

    python = _snippet(page, "python")
    ast.parse(python)
    assert 'api_key=os.environ["MIRA_API_KEY"]' in python
    assert 'base_url="http://testserver/v1"' in python and "temperature=0.2" in python
    assert "apiKey: process.env.MIRA_API_KEY" in _snippet(page, "javascript")


def test_view_code_with_a_draft_shows_the_next_request(alice_client, conversation):
    state = _state(conversation, draft="And the longest?")
    page = alice_client.post(f"{PAGE}code/", {"state": state}).content.decode()
    body = json.loads(_snippet(page, "curl").split("-d '", 1)[1].strip().rstrip("'"))
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == "The *Danube*."
    assert body["messages"][2] == {"role": "user", "content": "And the longest?"}


def test_view_code_names_a_bad_setting(alice_client):
    state = json.dumps({"conversation": None, "settings": {"columns": [{"model": ""}]}})
    page = alice_client.post(f"{PAGE}code/", {"state": state}).content.decode()
    assert "Model (column A): string should have at least 1 character." in page


def _save_preset(client, name: str, shared: bool, system: str = "Be brief.") -> str:
    settings = settings_for("mira-pro", system=system, stop=["###"])
    settings["columns"][0]["temperature"] = 0.3
    data = {"name": name, "settings": json.dumps(settings)}
    if shared:
        data["shared"] = "on"
    response = client.post(f"{PAGE}presets/save/", data, headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.content.decode()


def test_presets_are_shared_only_when_their_owner_says_so(
    alice_client, bob, charlie_client, upstream_fleet
):
    page = _save_preset(alice_client, "Support agent", shared=True)
    assert "Saved “Support agent”." in page
    _save_preset(alice_client, "Private drafts", shared=False)
    preset = Preset.objects.get(name="Support agent")
    assert preset.settings == {
        "system": "Be brief.", "stop": ["###"], "response_format": "text", "json_schema": "",
        "model": "mira-pro", "temperature": 0.3, "top_p": None, "max_tokens": None,
    }  # fmt: skip

    bob_page = signed_in(bob).get(PAGE).content.decode()
    assert "Support agent · Alice Archer" in bob_page and "Private drafts" not in bob_page
    charlie_page = charlie_client.get("/w/globex/playground/").content.decode()
    assert "Support agent" not in charlie_page


def test_only_the_owner_changes_or_deletes_a_preset(alice_client, bob, upstream_fleet):
    _save_preset(alice_client, "Support agent", shared=True)
    _save_preset(alice_client, "Private drafts", shared=False)
    shared = Preset.objects.get(name="Support agent")
    private = Preset.objects.get(name="Private drafts")
    bob_client = signed_in(bob)
    delete = f"{PAGE}presets/delete/"
    assert bob_client.post(delete, {"preset": shared.pk}).status_code == 403
    assert bob_client.post(delete, {"preset": private.pk}).status_code == 404
    # Saving under the same name makes bob's own preset, leaving alice's alone.
    _save_preset(bob_client, "Support agent", shared=False, system="Be rude.")
    shared.refresh_from_db()
    assert shared.settings["system"] == "Be brief."
    assert Preset.objects.filter(name="Support agent").count() == 2

    page = _save_preset(alice_client, "Support agent", shared=True, system="Be kind.")
    assert "Updated “Support agent”." in page
    shared.refresh_from_db()
    assert shared.settings["system"] == "Be kind."
    response = alice_client.post(delete, {"preset": shared.pk}, headers={"HX-Request": "true"})
    page = response.content.decode()
    assert response.status_code == 200 and "Deleted “Support agent”." in page
    assert 'name="name"' in page and 'name="settings"' in page  # the save form is still whole
    assert not Preset.objects.filter(
        owner__email="alice@example.com", name="Support agent"
    ).exists()


def test_a_preset_needs_a_name(alice_client):
    data = {"name": "  ", "settings": json.dumps(settings_for())}
    page = alice_client.post(f"{PAGE}presets/save/", data).content.decode()
    assert "Give the preset a name." in page and 'data-reopen="pg-preset-save"' in page
    assert not Preset.objects.exists()


def test_a_stopped_reply_is_labelled(alice_client, conversation, upstream_fleet):
    reply = conversation.messages.get(request_id="req_second")
    reply.status = Status.STOPPED
    reply.save()
    page = alice_client.get(f"{PAGE}?c={conversation.pk}").content.decode()
    assert '<span class="chip">stopped</span>' in page
