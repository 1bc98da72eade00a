"""Changing roles and removing members, and the rule that a workspace keeps an owner."""

from django.db import connection

from accounts.models import Membership
from console.actions import create_key
from console.models import ApiKey, AuditEvent
from tests.conftest import signed_in

HX = {"HX-Request": "true"}


def _membership(user, slug="acme") -> Membership:
    return Membership.objects.get(user=user, workspace__slug=slug)


def test_an_owner_changes_a_role(alice_client, bob):
    response = alice_client.post(
        f"/w/acme/members/{_membership(bob).pk}/role/", {"role": "admin"}, headers=HX
    )
    assert response.status_code == 200
    assert "Role saved: admin." in response.content.decode()
    assert _membership(bob).role == "admin"


def test_an_unknown_role_is_refused_with_a_message(alice_client, bob):
    response = alice_client.post(
        f"/w/acme/members/{_membership(bob).pk}/role/", {"role": "emperor"}, headers=HX
    )
    assert response.status_code == 400
    assert "Choose one of the roles" in response.content.decode()
    assert "Role saved" not in response.content.decode()
    assert _membership(bob).role == "developer"


def test_the_last_owner_cannot_be_demoted(alice, alice_client):
    response = alice_client.post(
        f"/w/acme/members/{_membership(alice).pk}/role/", {"role": "admin"}, headers=HX
    )
    assert response.status_code == 400
    assert "needs an owner" in response.content.decode()
    assert _membership(alice).role == "owner"


def test_the_last_owner_cannot_leave(alice, alice_client):
    confirmation = alice_client.get("/w/acme/leave/").content.decode()
    assert "You are the last owner" in confirmation and "Leave Acme</button>" not in confirmation
    response = alice_client.post("/w/acme/leave/")
    assert response.status_code == 400
    assert "You are the last owner" in response.content.decode()
    assert _membership(alice).role == "owner"


def test_with_a_second_owner_the_first_may_step_down(alice, bob, alice_client):
    alice_client.post(f"/w/acme/members/{_membership(bob).pk}/role/", {"role": "owner"}, headers=HX)
    response = alice_client.post(
        f"/w/acme/members/{_membership(alice).pk}/role/", {"role": "developer"}, headers=HX
    )
    assert response.status_code == 200
    assert _membership(alice).role == "developer"
    assert _membership(bob).role == "owner"


def test_an_admin_cannot_demote_or_remove_an_owner(alice, member_of_acme):
    admin = signed_in(member_of_acme("admin"))
    owner = _membership(alice)
    assert (
        admin.post(f"/w/acme/members/{owner.pk}/role/", {"role": "viewer"}, headers=HX).status_code
        == 400
    )
    removal = admin.post(f"/w/acme/members/{owner.pk}/remove/")
    assert removal.status_code == 400
    assert "Only an owner can change another owner." in removal.text
    assert _membership(alice).role == "owner"


def test_an_owner_removes_a_member(alice_client, bob):
    response = alice_client.post(f"/w/acme/members/{_membership(bob).pk}/remove/")
    assert response["Location"] == "/w/acme/members/"
    assert "bob@example.com was removed from Acme." in alice_client.get("/w/acme/members/").text
    assert not Membership.objects.filter(user=bob).exists()
    assert signed_in(bob).get("/w/acme/").status_code == 404


def test_a_developer_can_leave(bob, bob_client):
    response = bob_client.post("/w/acme/leave/")
    assert response["Location"] == "/"
    assert not Membership.objects.filter(user=bob).exists()


def test_a_viewer_finds_the_way_to_leave_in_the_account_menu_and_leaves(member_of_acme):
    viewer = member_of_acme("viewer")
    client = signed_in(viewer)
    page = client.get("/w/acme/").text
    assert 'href="/w/acme/leave/"' in page and "Leave Acme" in page
    assert client.get("/w/acme/leave/").status_code == 200
    assert client.post("/w/acme/leave/")["Location"] == "/"
    assert not Membership.objects.filter(user=viewer).exists()


def test_a_developer_cannot_change_roles(alice, bob, bob_client):
    response = bob_client.post(
        f"/w/acme/members/{_membership(alice).pk}/role/", {"role": "viewer"}, headers=HX
    )
    assert response.status_code == 403
    assert _membership(alice).role == "owner"


def test_members_of_another_workspace_cannot_be_reached_by_id(alice_client, charlie):
    assert (
        alice_client.post(
            f"/w/acme/members/{_membership(charlie, 'globex').pk}/remove/"
        ).status_code
        == 404
    )
    assert Membership.objects.filter(user=charlie).exists()


def test_the_members_page_lists_the_team_with_roles(alice_client, bob):
    page = alice_client.get("/w/acme/members/").content.decode()
    assert "alice@example.com" in page and "bob@example.com" in page
    assert "Invite people" in page


def test_a_developer_sees_the_team_but_no_invite_form(bob_client, alice):
    page = bob_client.get("/w/acme/members/").content.decode()
    assert "alice@example.com" in page
    assert "Invite people" not in page
    assert "<select" not in page


def test_an_admin_renames_the_workspace_and_a_blank_name_is_refused(alice_client):
    assert (
        alice_client.post("/w/acme/settings/", {"name": "Acme Labs"})["Location"]
        == "/w/acme/settings/"
    )
    response = alice_client.post("/w/acme/settings/", {"name": ""})
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert "Acme Labs" in alice_client.get("/w/acme/").content.decode()


# ---------- a member's keys stop when they leave ----------


def _keys_of(user, workspace, *names: str, **settings) -> list:
    return [
        create_key(workspace=workspace, name=name, created_by=user, **settings)[0] for name in names
    ]


def test_removing_a_member_revokes_every_key_they_created_in_the_workspace(
    alice, bob, acme, globex, alice_client
):
    working, paused = _keys_of(bob, acme, "ci", "deploy")
    paused.disable()
    (already,) = _keys_of(bob, acme, "old")
    already.revoke()
    (alices,) = _keys_of(alice, acme, "alice's")
    Membership.objects.create(user=bob, workspace=globex, role="developer")
    (elsewhere,) = _keys_of(bob, globex, "globex")

    response = alice_client.post(f"/w/acme/members/{_membership(bob).pk}/remove/")

    assert response["Location"] == "/w/acme/members/"
    assert {k.name: k.status for k in ApiKey.objects.all()} == {
        "ci": "revoked",
        "deploy": "revoked",
        "old": "revoked",
        "alice's": "active",
        "globex": "active",
    }
    events = AuditEvent.objects.filter(action="key.revoked", detail__reason="member_removed")
    assert sorted((e.api_key.name, e.actor, e.detail["member"]) for e in events) == [
        ("ci", alice, "bob@example.com"),
        ("deploy", alice, "bob@example.com"),
    ]


def test_leaving_revokes_the_keys_one_created_there(bob, acme, bob_client):
    keys = _keys_of(bob, acme, "ci", "deploy")
    assert bob_client.post("/w/acme/leave/")["Location"] == "/"
    assert {k.status for k in ApiKey.objects.filter(pk__in=[k.pk for k in keys])} == {"revoked"}
    events = AuditEvent.objects.filter(action="key.revoked", actor=bob)
    assert {e.detail["reason"] for e in events} == {"member_left"}
    assert events.count() == 2


def test_a_refused_removal_stops_no_keys(alice, acme, member_of_acme):
    admin = signed_in(member_of_acme("admin"))
    (key,) = _keys_of(alice, acme, "owner's")
    assert admin.post(f"/w/acme/members/{_membership(alice).pk}/remove/").status_code == 400
    key.refresh_from_db()
    assert key.status == "active"
    assert not AuditEvent.objects.filter(action="key.revoked").exists()


def test_the_remove_confirmation_says_how_many_keys_will_stop(alice, bob, acme, alice_client):
    _keys_of(bob, acme, "ci", "deploy")
    page = alice_client.get(f"/w/acme/members/{_membership(bob).pk}/remove/")
    text = " ".join(page.content.decode().split())
    assert page.status_code == 200
    assert "Remove bob@example.com from Acme?" in text
    assert "2 API keys they created in Acme will stop working at once" in text
    assert 'method="post"' in text and "csrfmiddlewaretoken" in text
    assert _membership(bob)  # asking is not removing


def test_the_leave_confirmation_says_how_many_keys_will_stop(bob, acme, bob_client):
    _keys_of(bob, acme, "ci")
    text = " ".join(bob_client.get("/w/acme/leave/").content.decode().split())
    assert "Leave Acme?" in text
    assert "1 API key you created in Acme will stop working at once" in text
    assert _membership(bob)


def test_a_member_without_keys_is_told_none_will_stop(alice, bob, alice_client):
    text = alice_client.get(f"/w/acme/members/{_membership(bob).pk}/remove/").content.decode()
    assert "No API keys of theirs will stop" in " ".join(text.split())


def test_the_members_page_asks_before_removing(alice, bob, alice_client):
    page = alice_client.get("/w/acme/members/").content.decode()
    assert f'href="/w/acme/members/{_membership(bob).pk}/remove/"' in page
    assert 'href="/w/acme/leave/"' in page


def test_deleting_a_persons_account_revokes_their_keys(alice, bob, acme):
    keys = _keys_of(bob, acme, "ci", "deploy")
    bob.delete()
    assert {k.status for k in ApiKey.objects.filter(pk__in=[k.pk for k in keys])} == {"revoked"}
    assert (
        AuditEvent.objects.filter(action="key.revoked", detail__reason="membership_deleted").count()
        == 2
    )


def test_a_workspace_is_deleted_with_its_members_and_keys(alice, bob, acme):
    _keys_of(bob, acme, "ci")
    acme.delete()
    connection.check_constraints()  # what commit would check
    assert not ApiKey.objects.exists() and not AuditEvent.objects.exists()
    assert not Membership.objects.exists()
