"""Invitations: sent by email, accepted once, by new and existing users, until they expire."""

import re
from datetime import timedelta

from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts.models import Invitation, Membership
from tests.conftest import PASSWORD, signed_in


def _invite(client: Client, email: str, role: str = "developer", htmx: bool = True):
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post("/w/acme/members/invite/", {"email": email, "role": role}, headers=headers)


def _link_from_last_email() -> str:
    match = re.search(r"http://testserver(/invite/[^/\s]+/)", mail.outbox[-1].body)
    assert match, mail.outbox[-1].body
    return match.group(1)


def test_an_owner_invites_by_email_and_the_pending_invitation_is_listed(alice_client):
    response = _invite(alice_client, "dana@example.com", "admin")
    assert response.status_code == 200
    assert "Invitation sent to dana@example.com" in response.content.decode()
    assert mail.outbox[-1].to == ["dana@example.com"]
    assert "Acme" in mail.outbox[-1].subject
    page = alice_client.get("/w/acme/members/").content.decode()
    assert "dana@example.com" in page
    invitation = Invitation.objects.get(email="dana@example.com")
    # Only a hash of the token is stored.
    assert invitation.token_hash not in mail.outbox[-1].body


def test_a_new_user_accepts_by_choosing_a_password(alice_client):
    _invite(alice_client, "dana@example.com", "viewer")
    link = _link_from_last_email()
    visitor = Client()
    page = visitor.get(link)
    assert page.status_code == 200
    assert "Create account and join" in page.content.decode()
    response = visitor.post(
        link,
        {
            "name": "Dana",
            "password1": "a-strong-passphrase-9",
            "password2": "a-strong-passphrase-9",
        },
    )
    assert response["Location"] == "/w/acme/"
    membership = Membership.objects.get(user__email="dana@example.com", workspace__slug="acme")
    assert membership.role == "viewer"
    # Signed in already, and the password works for later sign-ins.
    assert visitor.get("/w/acme/").status_code == 200
    assert Client().login(email="dana@example.com", password="a-strong-passphrase-9")


def test_a_weak_or_mismatched_password_is_refused_next_to_the_field(alice_client):
    _invite(alice_client, "dana@example.com")
    link = _link_from_last_email()
    response = Client().post(link, {"password1": "password", "password2": "password"})
    assert response.status_code == 400
    assert "This password is too common" in response.content.decode()
    response = Client().post(
        link, {"password1": "a-strong-passphrase-9", "password2": "other-passphrase-9"}
    )
    assert "The two passwords differ" in response.content.decode()
    assert not Membership.objects.filter(user__email="dana@example.com").exists()


def test_an_existing_user_signs_in_and_then_joins(alice_client, charlie):
    _invite(alice_client, "charlie@example.com", "developer")
    link = _link_from_last_email()
    visitor = Client()
    page = visitor.get(link).content.decode()
    assert "Sign in to accept" in page
    login = visitor.post(
        f"/accounts/login/?next={link}", {"login": "charlie@example.com", "password": PASSWORD}
    )
    assert login["Location"] == link
    assert "Join Acme" in visitor.get(link).content.decode()
    assert visitor.post(link)["Location"] == "/w/acme/"
    assert Membership.objects.get(user=charlie, workspace__slug="acme").role == "developer"
    # Charlie keeps his own workspace too.
    assert Membership.objects.filter(user=charlie, workspace__slug="globex").exists()


def test_an_invitation_for_someone_else_cannot_be_accepted_by_the_signed_in_user(
    alice_client, charlie
):
    _invite(alice_client, "dana@example.com")
    link = _link_from_last_email()
    response = signed_in(charlie).post(link)
    assert response.status_code == 403
    assert not Membership.objects.filter(user=charlie, workspace__slug="acme").exists()


def test_a_used_token_cannot_be_used_again(alice_client):
    _invite(alice_client, "dana@example.com")
    link = _link_from_last_email()
    Client().post(
        link, {"password1": "a-strong-passphrase-9", "password2": "a-strong-passphrase-9"}
    )
    again = Client().get(link)
    assert again.status_code == 410
    assert "already accepted" in again.content.decode()


def test_an_expired_invitation_is_refused(alice_client):
    _invite(alice_client, "dana@example.com")
    link = _link_from_last_email()
    Invitation.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    response = Client().post(
        link, {"password1": "a-strong-passphrase-9", "password2": "a-strong-passphrase-9"}
    )
    assert response.status_code == 410
    assert "expired" in response.content.decode()
    assert not Membership.objects.filter(user__email="dana@example.com").exists()


def test_invitations_expire_after_seven_days_by_default(alice_client):
    _invite(alice_client, "dana@example.com")
    invitation = Invitation.objects.get()
    assert timedelta(days=6, hours=23) < invitation.expires_at - timezone.now() <= timedelta(days=7)


def test_a_revoked_invitation_is_refused(alice_client):
    _invite(alice_client, "dana@example.com")
    link = _link_from_last_email()
    invitation = Invitation.objects.get()
    response = alice_client.post(
        f"/w/acme/invitations/{invitation.pk}/revoke/", headers={"HX-Request": "true"}
    )
    assert "revoked" in response.content.decode()
    assert "dana@example.com" not in alice_client.get("/w/acme/members/").content.decode()
    assert Client().get(link).status_code == 410


def test_resending_sends_a_new_link_and_retires_the_old_one(alice_client):
    _invite(alice_client, "dana@example.com")
    old_link = _link_from_last_email()
    invitation = Invitation.objects.get()
    alice_client.post(
        f"/w/acme/invitations/{invitation.pk}/resend/", headers={"HX-Request": "true"}
    )
    new_link = _link_from_last_email()
    assert new_link != old_link
    assert Client().get(old_link).status_code == 404
    assert Client().get(new_link).status_code == 200


def test_a_bad_email_is_named_beside_the_field_and_nothing_is_sent(alice_client):
    response = _invite(alice_client, "not-an-email")
    assert response.status_code == 400
    assert "Enter a valid email address" in response.content.decode()
    assert mail.outbox == [] and not Invitation.objects.exists()


def test_inviting_an_existing_member_says_so(alice_client, bob):
    response = _invite(alice_client, "bob@example.com")
    assert response.status_code == 400
    assert "bob@example.com is already a member of Acme" in response.content.decode()


def test_an_admin_cannot_invite_an_owner(member_of_acme, alice):
    admin = signed_in(member_of_acme("admin"))
    response = _invite(admin, "dana@example.com", "owner")
    assert response.status_code == 400
    assert not Invitation.objects.exists()


def test_another_workspace_cannot_touch_acmes_invitations(alice_client, charlie_client):
    _invite(alice_client, "dana@example.com")
    invitation = Invitation.objects.get()
    assert charlie_client.post(f"/w/globex/invitations/{invitation.pk}/revoke/").status_code == 404
    assert Invitation.objects.get().status == "pending"


def test_without_htmx_the_invite_form_redirects_with_a_message(alice_client):
    response = _invite(alice_client, "dana@example.com", htmx=False)
    assert response["Location"] == "/w/acme/members/"
    assert (
        "Invitation sent to dana@example.com"
        in alice_client.get("/w/acme/members/").content.decode()
    )
