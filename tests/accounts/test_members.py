"""Changing roles and removing members, and the rule that a workspace keeps an owner."""

from accounts.models import Membership
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
    response = alice_client.post("/w/acme/leave/")
    assert response["Location"] == "/w/acme/"
    assert _membership(alice).role == "owner"
    assert "last owner" in alice_client.get("/w/acme/").content.decode()


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
    assert admin.post(f"/w/acme/members/{owner.pk}/remove/", headers=HX).status_code == 400
    assert _membership(alice).role == "owner"


def test_an_owner_removes_a_member(alice_client, bob):
    response = alice_client.post(f"/w/acme/members/{_membership(bob).pk}/remove/", headers=HX)
    assert response.status_code == 200
    assert not Membership.objects.filter(user=bob).exists()
    assert signed_in(bob).get("/w/acme/").status_code == 404


def test_a_developer_can_leave(bob, bob_client):
    response = bob_client.post("/w/acme/leave/")
    assert response["Location"] == "/"
    assert not Membership.objects.filter(user=bob).exists()


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
