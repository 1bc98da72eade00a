"""Start-up refuses unsafe production settings; pages carry a strict Content-Security-Policy."""

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("DEBUG", "MIRA_TESTING", "SECRET_KEY")
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = _manage("check")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_the_console_application_refuses_to_load_without_a_secret_key():
    # What uvicorn and daphne do first: import the ASGI application.
    clean = {
        k: v for k, v in os.environ.items() if k not in ("DEBUG", "MIRA_TESTING", "SECRET_KEY")
    }
    result = subprocess.run(
        [sys.executable, "-c", "import config.asgi"],
        cwd=ROOT,
        env=clean | {"DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_migrations_refuse_to_run_without_a_secret_key():
    result = _manage("migrate", "--check")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_a_development_secret_key_is_refused_when_debug_is_off():
    result = _manage("check", SECRET_KEY="django-insecure-" + secrets.token_urlsafe(40))
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_a_bad_boolean_in_the_environment_is_named():
    result = _manage("check", DEBUG="maybe")
    assert result.returncode != 0
    assert "DEBUG must be true or false, not 'maybe'" in result.stderr


def test_the_deployment_checks_pass_with_production_like_settings():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="console.example.com",
        EMAIL_HOST="smtp.example.com",
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_pages_have_a_csp_that_allows_only_nonced_or_same_origin_scripts(alice_client):
    response = alice_client.get("/w/acme/")
    policy = response["Content-Security-Policy"]
    assert "unsafe-inline" not in policy
    nonce = re.search(r"script-src 'self' 'nonce-([^']+)'", policy).group(1)
    for tag in re.findall(r"<script[^>]*>", response.content.decode()):
        assert "src=" in tag or f'nonce="{nonce}"' in tag, tag
    assert 'nonce="' in response.content.decode()  # htmx is loaded with the nonce


def test_pages_carry_no_inline_style_attributes(alice_client):
    for url in ("/w/acme/", "/w/acme/members/", "/w/acme/settings/", "/w/acme/keys/"):
        assert " style=" not in alice_client.get(url).content.decode(), url


def test_every_response_has_the_security_headers(db, client):
    response = client.get("/accounts/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
