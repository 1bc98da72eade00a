"""`manage.py createapikey`: a key for scripts, printed once and nothing else."""

import hashlib
import re
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command

from console import keys
from console.models import ADMIN_SCOPE, PRODUCT_SCOPES, ApiKey, AuditEvent


def _run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("createapikey", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_prints_the_secret_and_nothing_else(acme):
    out, err = _run("--workspace", "acme", "--name", "deploy script")
    assert re.fullmatch(r"sk-mira-[0-9a-f]{46}\n", out)
    assert err == ""
    secret = out.strip()
    key = ApiKey.objects.get()
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert (key.workspace, key.name, key.created_by) == (acme, "deploy script", None)
    assert key.scopes == list(PRODUCT_SCOPES) and key.status == "active"
    assert AuditEvent.objects.get().action == "key.created"


def test_the_printed_secret_works(transactional_db, acme):
    # The lookup runs on the gateway's database thread, which sees committed rows only.
    secret = _run("--workspace", "acme", "--name", "ci")[0].strip()
    assert keys.is_well_formed(secret)
    info = async_to_sync(keys.lookup)(secret)
    assert info.workspace_slug == "acme" and info.active and info.name == "ci"


def test_admin_adds_the_account_api_scope(acme):
    _run("--workspace", "acme", "--name", "ops", "--admin")
    assert ApiKey.objects.get().scopes == [*PRODUCT_SCOPES, ADMIN_SCOPE]


def test_an_unknown_workspace_is_a_command_error(db):
    with pytest.raises(CommandError, match="No workspace with the slug 'nowhere'"):
        _run("--workspace", "nowhere", "--name", "x")
    assert ApiKey.objects.count() == 0
