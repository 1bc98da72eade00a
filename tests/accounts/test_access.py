"""The role table, enforced on every workspace view through one mechanism."""

import re

import pytest
from django.urls import URLPattern, reverse

from accounts.roles import PERMISSIONS, Role, role_can
from config.urls import workspace_patterns

_PLACEHOLDERS = {
    "int": 999999,
    "str": "nothing-here",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "slug": "x",
    "jobkind": "music",
}


def _workspace_urls(slug: str) -> list[tuple[URLPattern, str]]:
    """Every workspace URL, with a placeholder for each path parameter besides the slug."""
    urls = []
    # Leaving last: it ends the membership that the other requests rely on.
    for pattern in sorted(workspace_patterns, key=lambda p: p.name == "workspace_leave"):
        kwargs = {"slug": slug}
        for converter, name in re.findall(r"<(\w+):(\w+)>", str(pattern.pattern)):
            kwargs[name] = _PLACEHOLDERS[converter]
        urls.append((pattern, reverse(pattern.name, kwargs=kwargs)))
    return urls


def test_every_workspace_view_names_a_permission_from_the_table():
    for pattern in workspace_patterns:
        permission = getattr(pattern.callback, "required_permission", None)
        assert permission in PERMISSIONS, f"{pattern.name} is not guarded by @workspace_view"


@pytest.mark.parametrize("role", list(Role))
def test_each_role_reaches_exactly_the_pages_its_permissions_allow(role, member_of_acme, client):
    user = member_of_acme(role)
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    for pattern, url in _workspace_urls("acme"):
        permission = pattern.callback.required_permission
        # GET throughout: the permission is checked before the method, so nothing changes.
        response = client.get(url)
        if role_can(role, permission):
            assert response.status_code != 403, f"{role} was refused {url}"
        else:
            assert response.status_code == 403, f"{role} reached {url} ({response.status_code})"


def test_a_viewer_sees_only_usage_and_spend_in_the_navigation(member_of_acme, client):
    viewer = member_of_acme(Role.VIEWER)
    client.force_login(viewer, backend="django.contrib.auth.backends.ModelBackend")
    page = client.get("/w/acme/").content.decode()
    nav = page.split('<nav class="nav">')[1].split("</nav>")[0]
    assert "Usage" in nav and "Billing" in nav and "Dashboard" in nav
    for hidden in ("Playground", "API keys", "Members", "Settings"):
        assert hidden not in nav


def test_charlie_gets_404_on_every_url_of_alices_workspace(alice, charlie_client):
    for _pattern, url in _workspace_urls("acme"):
        assert charlie_client.get(url).status_code == 404, url
        assert charlie_client.post(url).status_code == 404, url


def test_an_unknown_workspace_is_404_too(charlie_client):
    assert charlie_client.get("/w/nowhere/").status_code == 404


def test_anonymous_visitors_are_sent_to_sign_in(acme, client):
    for _pattern, url in _workspace_urls("acme"):
        response = client.post(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("account_login"))


def test_the_workspace_switcher_lists_only_my_workspaces(alice, charlie, globex, client):
    from accounts.models import Membership

    Membership.objects.create(user=alice, workspace=globex, role=Role.VIEWER)
    client.force_login(alice, backend="django.contrib.auth.backends.ModelBackend")
    page = client.get("/w/acme/").content.decode()
    assert 'href="/w/globex/"' in page and 'href="/w/acme/"' in page
    client.force_login(charlie, backend="django.contrib.auth.backends.ModelBackend")
    assert 'href="/w/acme/"' not in client.get("/w/globex/").content.decode()


def test_home_goes_to_the_workspace_used_last(alice, globex, alice_client):
    from accounts.models import Membership

    Membership.objects.create(user=alice, workspace=globex, role=Role.VIEWER)
    alice_client.get("/w/globex/")
    assert alice_client.get("/")["Location"] == "/w/globex/"
    alice_client.get("/w/acme/members/")
    assert alice_client.get("/")["Location"] == "/w/acme/"


def test_someone_without_a_workspace_is_offered_to_create_one(db, client):
    from tests.conftest import make_user

    client.force_login(
        make_user("new@example.com"), backend="django.contrib.auth.backends.ModelBackend"
    )
    assert client.get("/")["Location"] == "/workspaces/new/"
    response = client.post("/workspaces/new/", {"name": "Initech Labs"})
    assert response["Location"] == "/w/initech-labs/"
    assert "Owner" in client.get("/w/initech-labs/members/").content.decode()
