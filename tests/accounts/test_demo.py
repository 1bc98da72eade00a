"""`manage.py demo` makes a workspace and an owner that can sign in, and is safe to run again."""

import io
import re

from django.core.management import call_command
from django.test import Client

from accounts.models import Membership, Workspace


def _demo(**env) -> str:
    out = io.StringIO()
    call_command("demo", stdout=out)
    return out.getvalue()


def test_the_printed_demo_account_signs_in(db, monkeypatch):
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    output = _demo()
    password = re.search(r"Password: (\S+)", output).group(1)
    client = Client()
    assert client.login(email="demo@example.com", password=password)
    assert client.get("/w/demo/").status_code == 200


def test_the_demo_workspace_starts_with_credit_once(db):
    from console import ledger

    _demo()
    _demo()
    assert ledger.balance_of(Workspace.objects.get(slug="demo")) == 25_000_000


def test_running_it_again_is_safe_and_honours_demo_password(db, monkeypatch):
    _demo()
    monkeypatch.setenv("DEMO_PASSWORD", "chosen-demo-password")
    assert "chosen-demo-password" in _demo()
    assert Workspace.objects.filter(slug="demo").count() == 1
    assert Membership.objects.get(workspace__slug="demo").role == "owner"
    assert Client().login(email="demo@example.com", password="chosen-demo-password")


def test_the_demo_owner_reaches_the_django_admin(db, monkeypatch):
    monkeypatch.setenv("DEMO_PASSWORD", "chosen-demo-password")
    _demo()
    client = Client()
    client.login(email="demo@example.com", password="chosen-demo-password")
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/accounts/workspace/").status_code == 200


def test_non_staff_members_are_kept_out_of_the_admin(bob_client):
    assert bob_client.get("/admin/")["Location"].startswith("/admin/login/")
