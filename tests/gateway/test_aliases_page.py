"""The Model aliases section of the Settings page: owners and admins map model names."""

import pytest
from django.urls import reverse

from console.models import AuditEvent, ModelAlias


@pytest.fixture
def urls(acme, upstream_fleet) -> dict[str, str]:
    return {
        "settings": reverse("settings", args=[acme.slug]),
        "list": reverse("aliases", args=[acme.slug]),
        "add": reverse("alias_add", args=[acme.slug]),
    }


def _add(client, urls, pattern: str, target: str = "mira", **headers):
    return client.post(urls["add"], {"pattern": pattern, "target": target}, **headers)


def test_the_settings_page_loads_the_section_from_its_own_page(alice_client, urls):
    page = alice_client.get(urls["settings"]).content.decode()
    assert f'hx-get="{urls["list"]}"' in page and "Manage model aliases" in page
    section = alice_client.get(urls["list"], headers={"HX-Request": "true"}).content.decode()
    assert section.lstrip().startswith('<section class="card" id="aliases"')
    assert '<option value="mira-pro">mira-pro</option>' in section


def test_an_admin_adds_an_alias_and_it_is_audited(alice_client, alice, acme, urls):
    response = _add(alice_client, urls, "claude-*", headers={"HX-Request": "true"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Calls asking for claude-* are now served by mira." in page
    assert "<td><code>claude-*</code></td>" in page
    alias = ModelAlias.objects.get(workspace=acme)
    assert (alias.pattern, alias.target) == ("claude-*", "mira")
    event = AuditEvent.objects.get(workspace=acme, action="alias.added")
    assert event.actor == alice and event.detail == {"pattern": "claude-*", "target": "mira"}


def test_without_htmx_an_added_alias_goes_back_to_settings(alice_client, acme, urls):
    response = _add(alice_client, urls, "gpt-5.1-codex", "mira-pro")
    assert response.status_code == 302 and response.url == urls["settings"]
    assert ModelAlias.objects.filter(workspace=acme, target="mira-pro").exists()


@pytest.mark.parametrize(
    ("pattern", "target", "field", "message"),
    [
        ("", "mira", "pattern", "Enter the model name clients ask for."),
        ("c" * 129, "mira", "pattern", "At most 128 characters."),
        ("claude sonnet", "mira", "pattern", "Use letters, digits"),
        ("<script>", "mira", "pattern", "Use letters, digits"),
        ("**", "mira", "pattern", "wildcards only"),
        ("mira-pro", "mira", "pattern", "is a model of the fleet"),
        ("claude-*", "gpt-4o", "target", "“gpt-4o” is not a model the fleet serves."),
        ("claude-*", "", "target", "Choose the model that serves it."),
    ],
)
def test_a_bad_field_gets_its_message_beside_it(
    alice_client, acme, urls, pattern, target, field, message
):
    response = _add(alice_client, urls, pattern, target, headers={"HX-Request": "true"})
    assert response.status_code == 400
    page = response.content.decode()
    start = page.index(f'id="alias-{field}-errors"')
    assert message in page[start : page.index("</ul>", start)]
    assert not ModelAlias.objects.exists() and not AuditEvent.objects.exists()


def test_a_duplicate_pattern_is_refused_beside_the_field(alice_client, acme, urls):
    _add(alice_client, urls, "claude-*")
    response = _add(alice_client, urls, "claude-*", "mira-pro")
    assert response.status_code == 400
    assert "There is an alias for claude-* already." in response.content.decode()
    assert list(ModelAlias.objects.values_list("target", flat=True)) == ["mira"]


def test_an_alias_is_deleted_and_audited(alice_client, alice, acme, urls):
    _add(alice_client, urls, "claude-*")
    alias = ModelAlias.objects.get()
    url = reverse("alias_delete", args=[acme.slug, alias.pk])
    page = alice_client.get(urls["list"]).content.decode()
    assert f'hx-post="{url}"' in page and 'hx-confirm="Delete the alias claude-* → mira?' in page
    response = alice_client.post(url, headers={"HX-Request": "true"})
    assert response.status_code == 200 and "is deleted" in response.content.decode()
    assert not ModelAlias.objects.exists()
    event = AuditEvent.objects.get(action="alias.deleted")
    assert event.actor == alice and event.detail["pattern"] == "claude-*"
    changes = response.content.decode().split('id="alias-changes"')[1]
    assert changes.index("Deleted <code>claude-*</code>") < changes.index("Added <code>claude-*")
    assert "by Alice Archer" in changes


def test_deleting_takes_a_post(alice_client, acme, urls):
    _add(alice_client, urls, "claude-*")
    url = reverse("alias_delete", args=[acme.slug, ModelAlias.objects.get().pk])
    assert alice_client.get(url).status_code == 405
    assert ModelAlias.objects.exists()


def test_a_developer_can_neither_see_nor_change_aliases(bob_client, acme, urls, alice_client):
    _add(alice_client, urls, "claude-*")
    alias = ModelAlias.objects.get()
    assert bob_client.get(urls["list"]).status_code == 403
    assert _add(bob_client, urls, "gpt-*").status_code == 403
    delete = reverse("alias_delete", args=[acme.slug, alias.pk])
    assert bob_client.post(delete).status_code == 403
    assert ModelAlias.objects.count() == 1


def test_another_workspaces_alias_is_not_found(charlie_client, alice_client, acme, urls, globex):
    _add(alice_client, urls, "claude-*")
    alias = ModelAlias.objects.get()
    assert (
        charlie_client.post(reverse("alias_delete", args=[acme.slug, alias.pk])).status_code == 404
    )
    theirs = reverse("alias_delete", args=[globex.slug, alias.pk])
    assert charlie_client.post(theirs).status_code == 404
    assert ModelAlias.objects.exists()


def test_the_pages_forms_carry_csrf_tokens(alice_client, urls):
    _add(alice_client, urls, "claude-*")
    page = alice_client.get(urls["list"]).content.decode()
    assert page.count("csrfmiddlewaretoken") == page.count("<form ")


def test_the_fleet_files_aliases_are_shown_read_only(alice_client, upstream_fleet, urls):
    upstream_fleet.aliases = {"gpt-*": "mira"}
    page = alice_client.get(urls["list"]).content.decode()
    assert '<tr class="fleet-alias">' in page and "<code>gpt-*</code>" in page
