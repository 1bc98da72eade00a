"""Signing in: email and password, throttled failures, two-factor codes, password reset."""

import re

from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import (
    TOTP,
    format_hotp_value,
    generate_totp_secret,
    hotp_value,
    yield_hotp_counters_from_time,
)
from django.core import mail
from django.core.cache import cache
from django.test import Client

from tests.conftest import PASSWORD


def _sign_in(client: Client, email: str, password: str):
    return client.post("/accounts/login/", {"login": email, "password": password})


def test_the_sign_in_page_has_no_open_sign_up(db, client):
    page = client.get("/accounts/login/").content.decode()
    assert "Sign in" in page
    assert "Ask an admin for an invitation" in page
    assert client.get("/accounts/signup/").status_code == 200
    assert "sign up is currently closed" in client.get("/accounts/signup/").content.decode()


def test_a_member_signs_in_with_email_and_password_and_lands_in_their_workspace(alice, client):
    response = _sign_in(client, "ALICE@example.com", PASSWORD)
    assert response["Location"] == "/"
    assert client.get("/")["Location"] == "/w/acme/"


def test_a_wrong_password_is_refused_with_a_message(alice, client):
    response = _sign_in(client, "alice@example.com", "wrong")
    assert response.status_code == 200
    assert (
        "The email address and/or password you specified are not correct"
        in response.content.decode()
    )
    assert client.get("/w/acme/").status_code == 302


def test_repeated_failures_are_throttled_even_with_the_right_password_after(alice, client):
    cache.clear()
    for _ in range(5):
        _sign_in(client, "alice@example.com", "wrong")
    response = _sign_in(client, "alice@example.com", PASSWORD)
    assert "Too many failed login attempts" in response.content.decode()
    assert client.get("/w/acme/").status_code == 302
    cache.clear()


def test_signing_out_ends_the_session(alice, client):
    _sign_in(client, "alice@example.com", PASSWORD)
    client.post("/accounts/logout/")
    assert client.get("/w/acme/").status_code == 302


def _current_code(secret: str) -> str:
    counter = next(iter(yield_hotp_counters_from_time()))
    return format_hotp_value(hotp_value(secret, counter))


def test_with_two_factor_a_code_is_required_after_the_password(alice, client):
    cache.clear()
    secret = generate_totp_secret()
    TOTP.activate(alice, secret)
    response = _sign_in(client, "alice@example.com", PASSWORD)
    assert response["Location"] == "/accounts/2fa/authenticate/"
    assert client.get("/w/acme/").status_code == 302  # not signed in yet
    wrong = client.post("/accounts/2fa/authenticate/", {"code": "000000"})
    assert "Incorrect code" in wrong.content.decode()
    right = client.post("/accounts/2fa/authenticate/", {"code": _current_code(secret)})
    assert right.status_code == 302
    assert client.get("/w/acme/").status_code == 200


def test_a_recovery_code_also_completes_two_factor_sign_in(alice, client):
    cache.clear()
    TOTP.activate(alice, generate_totp_secret())
    codes = RecoveryCodes.activate(alice).get_unused_codes()
    _sign_in(client, "alice@example.com", PASSWORD)
    client.post("/accounts/2fa/authenticate/", {"code": codes[0]})
    assert client.get("/w/acme/").status_code == 200
    assert Authenticator.objects.filter(user=alice, type=Authenticator.Type.RECOVERY_CODES).exists()


def test_a_member_can_turn_on_two_factor_from_the_console(alice, client):
    _sign_in(client, "alice@example.com", PASSWORD)
    # Turning it on asks for the password again first.
    assert client.get("/accounts/2fa/totp/activate/")["Location"].startswith(
        "/accounts/reauthenticate/"
    )
    client.post("/accounts/reauthenticate/", {"password": PASSWORD})
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200
    secret = re.search(r'id="authenticator_secret"[^>]*value="([A-Z2-7]+)"', page.content.decode())
    secret = secret or re.search(r"secret=([A-Z2-7]+)", page.content.decode())
    assert secret, "the activation page shows the secret"
    response = client.post("/accounts/2fa/totp/activate/", {"code": _current_code(secret.group(1))})
    assert response.status_code == 302
    assert Authenticator.objects.filter(user=alice, type=Authenticator.Type.TOTP).exists()


def test_password_reset_sends_a_link_that_sets_a_new_password(alice, client):
    client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert mail.outbox and mail.outbox[-1].to == ["alice@example.com"]
    link = re.search(
        r"http://testserver(/accounts/password/reset/key/\S+/)", mail.outbox[-1].body
    ).group(1)
    form_url = client.get(link)["Location"]
    client.post(
        form_url, {"password1": "a-brand-new-passphrase-7", "password2": "a-brand-new-passphrase-7"}
    )
    assert Client().login(email="alice@example.com", password="a-brand-new-passphrase-7")
