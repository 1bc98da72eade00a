"""The Django admin signs in through the console's own sign-in: two-factor and the throttle apply."""

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.core.cache import cache
from django.test import Client

from tests.conftest import PASSWORD, make_user


@pytest.fixture
def staff(db):
    """A staff member who may open the Django admin."""
    user = make_user("ops@example.com", "Ola Ops")
    user.is_staff = user.is_superuser = True
    user.save()
    return user


@pytest.fixture(autouse=True)
def _fresh_throttle():
    cache.clear()
    yield
    cache.clear()


def _admin_password_post(client: Client, password: str = PASSWORD):
    return client.post(
        "/admin/login/?next=/admin/", {"username": "ops@example.com", "password": password}
    )


def test_the_admin_login_page_sends_people_to_the_console_sign_in(staff, client):
    response = client.get("/admin/")
    assert response.status_code == 302
    login = client.get(response["Location"])
    assert login["Location"] == "/accounts/login/?next=%2Fadmin%2F"
    assert client.get(login["Location"]).status_code == 200


def test_a_password_posted_to_the_admin_login_signs_nobody_in(staff, client):
    response = _admin_password_post(client)
    assert response["Location"] == "/accounts/login/?next=%2Fadmin%2F"
    assert client.get("/admin/").status_code == 302


def test_with_two_factor_the_password_alone_does_not_open_the_admin(staff, client):
    TOTP.activate(staff, generate_totp_secret())
    _admin_password_post(client)
    assert client.get("/admin/").status_code == 302
    response = client.post(
        "/accounts/login/?next=/admin/", {"login": "ops@example.com", "password": PASSWORD}
    )
    assert response["Location"] == "/accounts/2fa/authenticate/"
    assert client.get("/admin/").status_code == 302


def test_after_failed_sign_ins_the_admin_is_throttled_too(staff, client):
    for _ in range(5):
        client.post("/accounts/login/", {"login": "ops@example.com", "password": "wrong"})
    _admin_password_post(client)
    assert client.get("/admin/").status_code == 302
    throttled = client.post("/accounts/login/", {"login": "ops@example.com", "password": PASSWORD})
    assert "Too many failed login attempts" in throttled.content.decode()


def test_a_staff_member_signed_in_through_the_console_reaches_the_admin(staff, client):
    client.post("/accounts/login/", {"login": "ops@example.com", "password": PASSWORD})
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/login/")["Location"] == "/admin/"


def test_a_member_who_is_not_staff_is_refused_the_admin_login(alice, alice_client):
    assert alice_client.get("/admin/login/").status_code == 403
