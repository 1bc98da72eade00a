"""Model aliases: the names coding agents send are served by a model of the fleet."""

import json

import anthropic
import httpx
import openai
import pytest

from console.aliases import Aliases, add_alias, delete_alias, resolve
from console.models import ModelAlias
from tests.conftest import usage_records
from upstream.errors import FleetConfigError
from upstream.fleet import Fleet

MODELS = frozenset({"mira", "mira-pro", "mira-embed", "east/mira"})


def served(name: str, *mappings: dict[str, str]) -> str | None:
    return resolve(name, tuple(Aliases.of(m) for m in mappings), MODELS)


# ---------- the rules ----------


def test_an_exact_name_wins_over_a_glob():
    aliases = {"claude-*": "mira", "claude-sonnet-4-5": "mira-pro"}
    assert served("claude-sonnet-4-5", aliases) == "mira-pro"
    assert served("claude-haiku-4-5", aliases) == "mira"


def test_the_longest_glob_wins():
    aliases = {"claude-*": "mira", "claude-sonnet-*": "mira-pro", "*-codex": "mira-embed"}
    assert served("claude-sonnet-4-5-20250929", aliases) == "mira-pro"
    assert served("claude-opus-4-1", aliases) == "mira"
    assert served("gpt-5.1-codex", aliases) == "mira-embed"
    assert served("gpt-5.1", aliases) is None


def test_a_question_mark_matches_one_character_and_case_counts():
    aliases = {"gpt-?": "mira"}
    assert served("gpt-5", aliases) == "mira"
    assert served("gpt-51", aliases) is None
    assert served("GPT-5", aliases) is None


def test_a_provider_model_id_can_be_an_alias():
    aliases = {"anthropic/claude-sonnet-4.5": "mira-pro", "openai/*": "mira"}
    assert served("anthropic/claude-sonnet-4.5", aliases) == "mira-pro"
    assert served("openai/gpt-5.1", aliases) == "mira"


def test_a_model_of_the_fleet_is_never_aliased():
    aliases = {"mira*": "mira-pro", "east/*": "mira-pro", "*": "mira-embed"}
    assert served("mira", aliases) is None
    assert served("east/mira", aliases) is None
    assert served("mira-thinking-next", aliases) == "mira-pro"


def test_the_workspace_aliases_win_over_the_fleet_files():
    workspace, fleet = {"claude-*": "mira-pro"}, {"claude-*": "mira", "gpt-*": "mira"}
    assert served("claude-haiku-4-5", workspace, fleet) == "mira-pro"
    assert served("gpt-5.1-codex", workspace, fleet) == "mira"
    assert served("gemini-3", workspace, fleet) is None


def test_the_fleet_file_carries_aliases(tmp_path):
    path = tmp_path / "fleet.json"
    nodes = [{"name": "east", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}]
    path.write_text(json.dumps({"nodes": nodes, "aliases": {"claude-*": "mira"}}))
    fleet = Fleet.from_env({"MIRA_FLEET_FILE": str(path)})
    assert fleet.aliases == {"claude-*": "mira"} and fleet.node_names() == ["east"]
    path.write_text(json.dumps(nodes))
    assert Fleet.from_env({"MIRA_FLEET_FILE": str(path)}).aliases == {}


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        (["claude-*"], "must be an object"),
        ({"claude sonnet": "mira"}, "use letters"),
        ({"claude-*": 3}, "must be a model name"),
        ({"claude-*": "mira-*"}, "must be a model name"),
    ],
)
def test_a_fleet_file_with_bad_aliases_is_refused(tmp_path, aliases, message):
    path = tmp_path / "fleet.json"
    nodes = [{"name": "east", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}]
    path.write_text(json.dumps({"nodes": nodes, "aliases": aliases}))
    with pytest.raises(FleetConfigError, match=message):
        Fleet.from_env({"MIRA_FLEET_FILE": str(path)})


# ---------- through the live API ----------


def _openai(console_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=console_url, api_key=key, max_retries=0)


def _anthropic(console_url: str, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=console_url.removesuffix("/v1"), api_key=key, max_retries=0)


def _chat(console_url: str, key: str, model: str):
    return _openai(console_url, key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=20
    )


# The Anthropic SDK warns about the model names it knows to be retired.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_agents_model_name_is_served_by_its_alias_and_both_are_booked(
    console_url, api_key, acme, alice
):
    add_alias(workspace=acme, pattern="claude-*", target="mira", by=alice)
    message = _anthropic(console_url, api_key).messages.create(
        model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].text
    reply = _chat(console_url, api_key, "claude-haiku-4-5")
    assert reply.choices[0].message.content
    records = list(usage_records().order_by("created_at"))
    assert [(r.model_asked, r.model, r.status) for r in records] == [
        ("claude-sonnet-4-5", "mira", 200),
        ("claude-haiku-4-5", "mira", 200),
    ]


def test_a_call_that_names_a_model_of_the_fleet_records_no_alias(console_url, api_key, acme, alice):
    add_alias(workspace=acme, pattern="mira*", target="mira-pro", by=alice)
    _chat(console_url, api_key, "mira")
    record = usage_records().get()
    assert record.model == "mira" and record.model_asked == ""


def test_without_an_alias_an_unknown_model_is_refused_as_before(console_url, api_key):
    with pytest.raises(openai.APIStatusError) as caught:
        _chat(console_url, api_key, "claude-sonnet-4-5")
    assert caught.value.status_code == 400 and "Invalid model" in str(caught.value)
    assert usage_records().get().model_asked == ""


def test_embeddings_and_streams_are_aliased_too(console_url, api_key, acme, alice):
    add_alias(workspace=acme, pattern="text-embedding-3-small", target="mira-embed", by=alice)
    add_alias(workspace=acme, pattern="gpt-*", target="mira", by=alice)
    client = _openai(console_url, api_key)
    result = client.embeddings.create(model="text-embedding-3-small", input="red apples")
    assert result.data[0].embedding
    stream = client.chat.completions.create(
        model="gpt-5.1-codex", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    assert any(c.choices and c.choices[0].delta.content for c in stream)
    booked = {r.product: (r.model_asked, r.model) for r in usage_records().all()}
    assert booked == {
        "embeddings": ("text-embedding-3-small", "mira-embed"),
        "chat": ("gpt-5.1-codex", "mira"),
    }


def test_the_model_list_shows_exact_aliases(console_url, api_key, acme, alice):
    add_alias(workspace=acme, pattern="claude-sonnet-4-5", target="mira-pro", by=alice)
    add_alias(workspace=acme, pattern="gpt-*", target="mira", by=alice)
    listed = {m.id: m for m in _openai(console_url, api_key).models.list()}
    assert listed["claude-sonnet-4-5"].alias_of == "mira-pro"
    assert "mira" in listed and "gpt-*" not in listed


def test_a_change_of_alias_takes_effect_on_the_next_call(console_url, api_key, acme, alice):
    alias = add_alias(workspace=acme, pattern="claude-*", target="mira", by=alice)
    _chat(console_url, api_key, "claude-sonnet-4-5")
    delete_alias(alias=alias, by=alice)
    with pytest.raises(openai.APIStatusError):
        _chat(console_url, api_key, "claude-sonnet-4-5")
    add_alias(workspace=acme, pattern="claude-sonnet-*", target="mira-pro", by=alice)
    _chat(console_url, api_key, "claude-sonnet-4-5")
    served_by = [r.model for r in usage_records().filter(status=200).order_by("created_at")]
    assert served_by == ["mira", "mira-pro"]


def test_another_workspaces_aliases_do_not_apply(console_url, api_key, globex, charlie):
    add_alias(workspace=globex, pattern="claude-*", target="mira", by=charlie)
    with pytest.raises(openai.APIStatusError):
        _chat(console_url, api_key, "claude-sonnet-4-5")
    assert "claude-sonnet-4-5" not in {m.id for m in _openai(console_url, api_key).models.list()}


def test_the_fleet_files_aliases_apply_to_every_workspace_below_its_own(
    console_url, api_key, upstream_fleet, acme, alice
):
    upstream_fleet.aliases = {"claude-*": "mira", "gpt-5.1-codex": "mira"}
    add_alias(workspace=acme, pattern="claude-opus-*", target="mira-pro", by=alice)
    _chat(console_url, api_key, "claude-haiku-4-5")
    _chat(console_url, api_key, "claude-opus-4-1")
    listed = {m.id: m for m in _openai(console_url, api_key).models.list()}
    assert listed["gpt-5.1-codex"].alias_of == "mira"
    booked = {r.model_asked: r.model for r in usage_records().all()}
    assert booked == {"claude-haiku-4-5": "mira", "claude-opus-4-1": "mira-pro"}


def test_the_keys_model_allow_list_is_checked_against_the_model_served(console_url, acme, alice):
    from console.actions import create_key

    _key, secret = create_key(
        workspace=acme, name="pro only", created_by=alice, allowed_models=["mira-pro"]
    )
    add_alias(workspace=acme, pattern="claude-*", target="mira", by=alice)
    add_alias(workspace=acme, pattern="claude-opus-*", target="mira-pro", by=alice)
    _chat(console_url, secret, "claude-opus-4-1")
    with pytest.raises(openai.PermissionDeniedError) as caught:
        _chat(console_url, secret, "claude-haiku-4-5")
    assert "mira" in str(caught.value)


def test_a_model_that_is_not_a_string_is_left_to_the_schema(console_url, api_key, acme, alice):
    add_alias(workspace=acme, pattern="claude-*", target="mira", by=alice)
    response = httpx.post(
        f"{console_url}/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": ["claude-x"], "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert response.status_code == 400 and "model" in response.json()["detail"]
    assert ModelAlias.objects.count() == 1
