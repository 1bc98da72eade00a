"""The live token count: counted in the console (no upstream call, nothing metered), priced at
the model's input price, for the conversation the next send would carry; bad input is named,
and nothing of another member or workspace can be counted."""

import json

import pytest
from django.test import Client

from console.models import UsageRecord
from playground.models import Conversation, Message, Role
from tests.conftest import signed_in
from tests.playground.conftest import settings_for, text_of
from upstream.tokens import count_tokens

URL = "/w/acme/playground/tokens/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def chat_state(draft: str = "", model: str = "mira", conversation=None, **shared) -> dict:
    settings = settings_for(model, **shared)
    return {"conversation": conversation, "settings": settings, "column": 0, "draft": draft}


def count(client, kind: str = "chat", **fields):
    if "state" in fields and not isinstance(fields["state"], str):
        fields["state"] = json.dumps(fields["state"])
    return client.post(URL, {"kind": kind} | fields, **HTMX)


def shown(response) -> str:
    return text_of(response.content.decode())


@pytest.fixture
def conversation(alice, acme) -> Conversation:
    conversation = Conversation.objects.create(
        workspace=acme, user=alice, title="Rivers", settings=settings_for()
    )
    question = Message.objects.create(
        conversation=conversation, role=Role.USER, content="Name a long river in Europe"
    )
    reply = Message.objects.create(
        conversation=conversation, parent=question, role=Role.ASSISTANT,
        content="The Danube, which flows through ten countries.", model="mira",
    )  # fmt: skip
    conversation.settings["columns"][0]["leaf"] = reply.pk
    conversation.save()
    return conversation


def test_the_count_is_the_whole_prompt_with_its_input_price(alice_client):
    # No upstream is installed: the count is the console's own.
    response = count(
        alice_client, state=chat_state("Hello there, how are you?", system="Be brief.")
    )
    assert response.status_code == 200
    tokens = (count_tokens("Be brief.") + 4) + (count_tokens("Hello there, how are you?") + 4) + 2
    # mira's input tokens cost $0.50 a million: half a micro-unit each, rounded up.
    assert shown(response) == f"{tokens} tokens · ≈ $0.{-(-tokens // 2):06d}".rstrip("0")
    assert UsageRecord.objects.count() == 0


def test_the_count_follows_the_model_and_the_draft(alice_client):
    cheap = shown(count(alice_client, state=chat_state("Write a haiku about rain")))
    dear = shown(count(alice_client, state=chat_state("Write a haiku about rain", "mira-max")))
    tokens = count_tokens("Write a haiku about rain") + 4 + 2
    assert cheap.startswith(f"{tokens} tokens · ≈ $") and dear.startswith(f"{tokens} tokens · ≈ $")
    # mira-max's input costs five times mira's ($2.50 against $0.50 a million).
    assert dear == f"{tokens} tokens · ≈ $0.{tokens * 5 // 2 + tokens % 2:06d}".rstrip("0")
    assert cheap != dear
    longer = shown(count(alice_client, state=chat_state("Write a haiku about rain and wind")))
    assert longer.startswith(f"{tokens + 2} tokens")


def test_attached_images_count_as_the_gateway_counts_them(alice_client):
    plain = shown(count(alice_client, state=chat_state("What is in this picture?")))
    tokens = int(plain.split()[0])
    two = shown(count(alice_client, state=chat_state("What is in this picture?") | {"images": 2}))
    assert two.startswith(f"{tokens + 2 * 85} tokens")
    alone = shown(count(alice_client, state=chat_state("") | {"images": 1}))
    assert alone.startswith(f"{85 + 4 + 2} tokens")


def test_an_empty_new_chat_counts_nothing(alice_client):
    assert shown(count(alice_client, state=chat_state(""))) == "0 tokens · ≈ $0.00"


def test_a_conversation_counts_its_thread_and_the_draft(alice_client, conversation):
    # The page sends its settings, which name the message each column shows last.
    state = chat_state("And in Asia?", conversation=conversation.pk)
    state["settings"] = conversation.settings
    thread = [
        "Name a long river in Europe",
        "The Danube, which flows through ten countries.",
        "And in Asia?",
    ]
    tokens = sum(count_tokens(text) + 4 for text in thread) + 2
    assert shown(count(alice_client, state=state)).startswith(f"{tokens} tokens · ≈ $")


def test_the_responses_and_embeddings_forms_are_counted(alice_client):
    response = count(
        alice_client, "responses", model="mira", input="Explain recursion", instructions="Be terse."
    )
    tokens = count_tokens("Be terse.") + count_tokens("Explain recursion") + 4 * 2 + 2
    assert shown(response).startswith(f"{tokens} tokens · ≈ $")
    lines = "The cat sat on the mat\n\nA dog lay on the rug\n"
    response = count(alice_client, "embeddings", model="mira-embed", input=lines)
    tokens = count_tokens("The cat sat on the mat") + count_tokens("A dog lay on the rug")
    # Embedding tokens cost $0.02 a million: one micro-unit for any handful of them.
    assert shown(response) == f"{tokens} tokens · ≈ $0.000001"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "poem"}, "Say what to count: kind is chat, responses or embeddings."),
        ({"kind": "chat", "state": "not json"}, "Send the conversation's state to count."),
        ({"kind": "chat", "state": json.dumps({"settings": {"columns": []}})}, "Columns:"),
        ({"kind": "chat", "state": json.dumps(chat_state() | {"column": 5})}, "No such column."),
        ({"kind": "chat", "state": json.dumps(chat_state() | {"draft": 7})}, "must be text"),
        ({"kind": "chat", "state": json.dumps(chat_state() | {"images": 9})}, "at most 4 images"),
        ({"kind": "embeddings", "input": "Hello"}, "Pick a model to count for."),
        ({"kind": "responses", "model": "x" * 129, "input": "Hi"}, "Pick a model to count for."),
    ],
)
def test_bad_input_is_a_400_that_says_what_is_wrong(alice_client, fields, message):
    response = alice_client.post(URL, fields, **HTMX)
    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()
    assert message in shown(response)
    assert UsageRecord.objects.count() == 0


def test_nothing_of_another_member_or_workspace_can_be_counted(
    alice, bob_client, charlie_client, conversation
):
    state = chat_state("Hi", conversation=conversation.pk)
    # Bob shares Alice's workspace, not her conversations.
    assert count(bob_client, state=state).status_code == 404
    # Charlie is not a member of Acme at all.
    assert count(charlie_client, state=chat_state("Hi")).status_code == 404
    # Nor does his own workspace's counter open Alice's conversation.
    response = charlie_client.post(
        "/w/globex/playground/tokens/",
        {"kind": "chat", "state": json.dumps(state)},
        **HTMX,
    )
    assert response.status_code == 404


def test_the_count_needs_a_csrf_token_and_a_post(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice, backend="django.contrib.auth.backends.ModelBackend")
    assert count(client, state=chat_state("Hi")).status_code == 403
    assert signed_in(alice).get(URL).status_code == 405
