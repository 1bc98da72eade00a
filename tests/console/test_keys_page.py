"""The Keys page: create with a one-time reveal, list, search and sort, key actions, audit log."""

import hashlib
import re
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from accounts.models import Workspace
from accounts.roles import Role
from console import keys as key_store
from console.actions import create_key
from console.models import ApiKey, AuditEvent, UsageRecord
from tests.conftest import signed_in

HX = {"HX-Request": "true"}
SECRET = re.compile(r"sk-mira-[0-9a-f]{46}")
URL = "/w/acme/keys/"


def _secret_in(response) -> str:
    found = SECRET.findall(response.content.decode())
    assert len(set(found)) == 1, found
    return found[0]


def _create(client, **fields):
    data = {"name": "Backend", "scopes": ["chat", "embeddings"], "expiry": "never"} | fields
    return client.post(f"{URL}new/", data, headers=HX)


def _key(acme, name: str = "Old key", by=None, **settings) -> tuple[ApiKey, str]:
    return create_key(workspace=acme, name=name, created_by=by, **settings)


def _lookup(secret: str):
    key_store.forget(key_store.hash_secret(secret))
    return async_to_sync(key_store.lookup)(secret)


# ---------- creating and the one-time reveal ----------


def test_it_creates_a_key_with_every_field(alice, alice_client):
    response = _create(
        alice_client,
        name="  Production   backend ",
        scopes=["chat", "embeddings", "admin"],
        allowed_models="mira-pro, mira-embed mira-pro",
        rpm_limit="60",
        tpm_limit="100000",
        monthly_budget="2.50",
        expiry="30",
    )
    assert response.status_code == 200
    key = ApiKey.objects.get()
    assert key.name == "Production backend"
    assert key.created_by == alice
    assert key.scopes == ["chat", "embeddings", "admin"]
    assert key.allowed_models == ["mira-pro", "mira-embed"]
    assert (key.rpm_limit, key.tpm_limit) == (60, 100_000)
    assert key.monthly_budget == 2_500_000
    assert isinstance(key.monthly_budget, int)
    expected = timezone.now() + timedelta(days=30)
    assert abs(key.expires_at - expected) < timedelta(minutes=1)
    assert key.status == "active"


def test_it_takes_an_expiry_date_and_refuses_one_in_the_past(alice_client):
    day = timezone.localdate() + timedelta(days=10)
    assert _create(alice_client, expiry="date", expires_on=day.isoformat()).status_code == 200
    assert ApiKey.objects.get().expires_at.date() == day

    response = _create(alice_client, expiry="date", expires_on="2001-01-01")
    assert response.status_code == 400
    assert "Choose a date after today." in response.content.decode()
    response = _create(alice_client, expiry="date", expires_on="")
    assert "Choose the date on which the key stops working." in response.content.decode()
    assert ApiKey.objects.count() == 1


def test_the_secret_is_shown_once_and_only_its_hash_is_stored(alice_client):
    response = _create(alice_client)
    secret = _secret_in(response)
    page = response.content.decode()
    assert "will not be shown again" in page
    assert "no-store" in response["Cache-Control"]
    key = ApiKey.objects.get()
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(
        ApiKey.objects.values().get() | {"events": list(AuditEvent.objects.values())}
    )
    assert f"{secret[:16]}…{secret[-4:]}" == key.masked

    later = [
        alice_client.get(URL),
        alice_client.get(URL, headers=HX),
        alice_client.get(URL, {"q": "Backend"}, headers=HX),
        alice_client.post(f"{URL}disable/", {"key": key.pk}, headers=HX),
        alice_client.post(f"{URL}enable/", {"key": key.pk}, headers=HX),
        alice_client.post(f"{URL}revoke/", {"key": key.pk}, headers=HX),
        alice_client.get(URL),
    ]
    for response in later:
        assert response.status_code == 200
        assert secret not in response.content.decode()
        assert not SECRET.search(response.content.decode())
    assert key.masked in later[0].content.decode()


def test_the_full_page_fallback_reveals_the_secret_too(alice_client):
    response = alice_client.post(f"{URL}new/", {"name": "No JS", "scopes": ["chat"]})
    assert response.status_code == 200
    assert "<html" in response.content.decode()
    _secret_in(response)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"name": "   "}, "name", "Give the key a name"),
        ({"rpm_limit": "-5"}, "rpm_limit", "Enter a number above zero"),
        ({"tpm_limit": "1.5"}, "tpm_limit", "Enter a whole number"),
        ({"monthly_budget": "abc"}, "monthly_budget", "Enter an amount such as 25 or 2.50"),
        ({"monthly_budget": "0.0000001"}, "monthly_budget", "Enter an amount such as 25"),
        ({"monthly_budget": "0"}, "monthly_budget", "Enter an amount above zero"),
        ({"scopes": ["chat", "teleport"]}, "scopes", "“teleport” is not a product"),
        ({"scopes": []}, "scopes", "Choose at least one product"),
        ({"allowed_models": "mira-pro, <script>"}, "allowed_models", "is not a model name"),
        ({"expiry": "forever"}, "expiry", "Choose when the key expires."),
    ],
)
def test_bad_input_is_named_beside_its_field_and_creates_nothing(
    alice_client, fields, field, message
):
    response = _create(alice_client, **fields)
    assert response.status_code == 400
    page = response.content.decode()
    errors = re.search(rf'<ul class="errorlist" id="id_{field}_error">(.*?)</ul>', page, re.S)
    assert errors and message in errors.group(1), page
    assert 'id="key-create-form"' in page and "<html" not in page
    assert ApiKey.objects.count() == 0
    assert AuditEvent.objects.count() == 0


def test_without_htmx_bad_input_shows_the_whole_page_with_the_form_open(alice_client):
    response = alice_client.post(f"{URL}new/", {"name": "", "scopes": ["chat"]})
    assert response.status_code == 400
    page = response.content.decode()
    assert "<html" in page and "Give the key a name" in page
    assert 'popover id="key-create"' not in page  # shown in the page, not in a closed popover


def test_only_owners_and_admins_may_grant_the_account_api(bob_client, member_of_acme):
    assert 'value="admin"' not in bob_client.get(URL).content.decode()
    response = _create(bob_client, scopes=["chat", "admin"])
    assert response.status_code == 400
    assert "“admin” is not a product" in response.content.decode()
    assert ApiKey.objects.count() == 0

    admin_client = signed_in(member_of_acme(Role.ADMIN))
    assert 'value="admin"' in admin_client.get(URL).content.decode()
    assert _create(admin_client, scopes=["chat", "admin"]).status_code == 200
    assert ApiKey.objects.get().scopes == ["chat", "admin"]


# ---------- the list ----------


def test_the_list_shows_name_masked_owner_last_use_spend_and_status(alice, bob, acme, alice_client):
    used, _ = _key(acme, "Used key", alice, monthly_budget=25_000_000)
    used.last_used_at = timezone.now() - timedelta(minutes=5)
    used.save()
    UsageRecord.objects.create(
        request_id="r1",
        workspace=acme,
        api_key=used,
        product="chat",
        endpoint="/v1/x",
        status=200,
        cost=1_234_567,
    )
    UsageRecord.objects.create(
        request_id="r0",
        workspace=acme,
        api_key=used,
        product="chat",
        endpoint="/v1/x",
        status=200,
        cost=9_000_000,
        created_at=timezone.now() - timedelta(days=40),
    )
    _key(acme, "Bobs key", bob)
    cli, _ = _key(acme, "From the command line")
    cli.disable()

    page = alice_client.get(URL).content.decode()
    assert used.masked in page
    assert "Alice Archer" in page and "Bob Baker" in page and "Command line" in page
    assert "5\xa0minutes ago" in page
    assert "Never" in page
    assert "$1.23" in page and "of $25.00" in page and "$10.23" not in page
    assert '<span class="badge ok">Active</span>' in page
    assert '<span class="badge warn">Disabled</span>' in page


def test_a_developer_sees_only_their_own_keys(alice, bob, acme, bob_client):
    _key(acme, "Alices key", alice)
    _key(acme, "Bobs key", bob)
    page = bob_client.get(URL).content.decode()
    assert "Bobs key" in page and "Alices key" not in page
    assert "You see the keys you created." in page


def test_it_searches_by_name_or_prefix(alice, acme, alice_client):
    alpha, _ = _key(acme, "Alpha service", alice)
    _key(acme, "Beta service", alice)
    page = alice_client.get(URL, {"q": "alpha"}, headers=HX).content.decode()
    assert "Alpha service" in page and "Beta service" not in page
    assert "<html" not in page and 'id="key-list"' in page
    page = alice_client.get(URL, {"q": alpha.prefix}, headers=HX).content.decode()
    assert "Alpha service" in page and "Beta service" not in page
    page = alice_client.get(URL, {"q": "gamma"}, headers=HX).content.decode()
    assert "No keys match" in page


def _names(page: str) -> list[str]:
    return re.findall(r'<div class="key-name"><strong>(.*?)</strong>', page)


def test_it_sorts_by_name_created_and_last_used_and_keeps_the_search(alice, acme, alice_client):
    now = timezone.now()
    for name, used in (("bravo", 2), ("alpha", None), ("charlie", 1)):
        key, _ = _key(acme, name, alice)
        key.last_used_at = now - timedelta(hours=used) if used else None
        key.save()

    assert _names(alice_client.get(URL).content.decode()) == ["charlie", "alpha", "bravo"]
    assert _names(alice_client.get(URL, {"sort": "created"}).content.decode()) == [
        "bravo",
        "alpha",
        "charlie",
    ]
    assert _names(alice_client.get(URL, {"sort": "name"}).content.decode()) == [
        "alpha",
        "bravo",
        "charlie",
    ]
    assert _names(alice_client.get(URL, {"sort": "-name"}).content.decode()) == [
        "charlie",
        "bravo",
        "alpha",
    ]
    assert _names(alice_client.get(URL, {"sort": "-last_used"}).content.decode()) == [
        "charlie",
        "bravo",
        "alpha",
    ]
    assert _names(alice_client.get(URL, {"sort": "nonsense"}).content.decode()) == [
        "charlie",
        "alpha",
        "bravo",
    ]

    page = alice_client.get(URL, {"q": "a", "sort": "name"}, headers=HX).content.decode()
    assert 'href="/w/acme/keys/?q=a&amp;sort=-name"' in page  # the Name header flips the order
    assert 'href="/w/acme/keys/?q=a"' in page  # newest first is the default order
    assert 'name="sort" value="name" form="key-search"' in page  # the search keeps the sort


# ---------- actions ----------


def test_disable_enable_and_revoke_rerender_the_row_and_are_audited(
    transactional_db, alice, acme, alice_client
):
    # Key lookups run on the gateway's database thread, which sees committed rows only.
    key, secret = _key(acme, "Worker", alice)

    response = alice_client.post(f"{URL}disable/", {"key": key.pk}, headers=HX)
    assert response.status_code == 200
    page = response.content.decode()
    assert page.lstrip().startswith(f'<tr id="key-{key.pk}"')
    assert "Disabled" in page and 'hx-swap-oob="true"' in page
    key.refresh_from_db()
    assert key.status == "disabled"
    assert _lookup(secret).active is False

    alice_client.post(f"{URL}enable/", {"key": key.pk}, headers=HX)
    key.refresh_from_db()
    assert key.status == "active"
    assert _lookup(secret).active is True

    page = alice_client.post(f"{URL}revoke/", {"key": key.pk}, headers=HX).content.decode()
    assert "Revoked" in page
    key.refresh_from_db()
    assert key.status == "revoked"
    assert _lookup(secret).active is False

    actions = list(AuditEvent.objects.order_by("created_at").values_list("action", "actor"))
    assert actions == [
        ("key.created", alice.pk),
        ("key.disabled", alice.pk),
        ("key.enabled", alice.pk),
        ("key.revoked", alice.pk),
    ]
    page = alice_client.get(URL).content.decode()
    audit = page.split('id="key-audit"')[1]
    assert audit.index("revoked") < audit.index("re-enabled") < audit.index("disabled")
    assert f"<code>{key.masked}</code>" in audit and "Worker" in audit


def test_an_action_that_does_not_fit_the_status_is_refused_in_the_row(alice, acme, alice_client):
    key, _ = _key(acme, "Worker", alice)
    response = alice_client.post(f"{URL}enable/", {"key": key.pk}, headers=HX)
    assert response.status_code == 400
    assert "This key is active, so it cannot be re-enabled." in response.content.decode()
    key.revoke()
    response = alice_client.post(f"{URL}rotate/", {"key": key.pk, "grace": "0"}, headers=HX)
    assert response.status_code == 400
    assert "This key is revoked" in response.content.decode()
    assert AuditEvent.objects.filter(action="key.rotated").count() == 0


def test_without_htmx_actions_redirect_back_with_a_message(alice, acme, alice_client):
    key, _ = _key(acme, "Worker", alice)
    response = alice_client.post(f"{URL}revoke/", {"key": key.pk}, follow=True)
    assert response.redirect_chain == [(URL, 302)]
    assert f"Key Worker ({key.masked}) revoked." in response.content.decode()


def test_rotating_with_a_grace_period_keeps_the_old_secret_working_until_it_ends(
    transactional_db, alice, acme, alice_client
):
    old, old_secret = _key(acme, "Worker", alice, rpm_limit=60, scopes=["chat"])
    response = alice_client.post(f"{URL}rotate/", {"key": old.pk, "grace": "3600"}, headers=HX)
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#keys-page"
    new_secret = _secret_in(response)
    assert new_secret != old_secret and old_secret not in response.content.decode()
    assert "keeps working for 1 hour" in response.content.decode()

    old.refresh_from_db()
    new = ApiKey.objects.get(key_hash=key_store.hash_secret(new_secret))
    assert old.replaced_by == new
    assert (new.name, new.scopes, new.rpm_limit, new.created_by) == ("Worker", ["chat"], 60, alice)
    assert old.status == "active"
    assert timedelta(minutes=59) < old.expires_at - timezone.now() <= timedelta(hours=1)
    assert _lookup(old_secret).active and _lookup(new_secret).active
    assert "expires in" in alice_client.get(URL).content.decode()

    # When the grace period is over the old key has expired; the new one goes on.
    old.expires_at = timezone.now() - timedelta(seconds=1)
    old.save()
    assert old.status == "expired"
    assert _lookup(old_secret).expires_at < timezone.now()
    assert new.status == "active"

    event = AuditEvent.objects.get(action="key.rotated")
    assert (event.api_key, event.actor, event.detail["grace_seconds"]) == (old, alice, 3600)
    assert AuditEvent.objects.filter(action="key.created", api_key=new, actor=alice).exists()


def test_rotating_without_grace_revokes_the_old_key_at_once(alice, acme, alice_client):
    old, _ = _key(acme, "Worker", alice)
    response = alice_client.post(f"{URL}rotate/", {"key": old.pk, "grace": "0"}, headers=HX)
    assert "stopped working now" in response.content.decode()
    old.refresh_from_db()
    assert old.status == "revoked"


def test_rotating_needs_a_known_grace_period(alice, acme, alice_client):
    old, _ = _key(acme, "Worker", alice)
    response = alice_client.post(f"{URL}rotate/", {"key": old.pk, "grace": "99"}, headers=HX)
    assert response.status_code == 400
    assert "Choose how long the old secret keeps working." in response.content.decode()
    assert ApiKey.objects.count() == 1


def test_a_key_is_rotated_only_once(alice, acme, alice_client):
    old, _ = _key(acme, "Worker", alice)
    alice_client.post(f"{URL}rotate/", {"key": old.pk, "grace": "3600"}, headers=HX)
    response = alice_client.post(f"{URL}rotate/", {"key": old.pk, "grace": "3600"}, headers=HX)
    assert response.status_code == 400
    assert "rotate its replacement instead" in response.content.decode()
    assert ApiKey.objects.count() == 2


# ---------- who may do what ----------

ACTIONS = ("disable", "enable", "revoke", "rotate")


def test_a_developer_manages_their_own_keys_but_not_anyone_elses(alice, bob, acme, bob_client):
    alices, _ = _key(acme, "Alices key", alice)
    bobs, _ = _key(acme, "Bobs key", bob)
    for action in ACTIONS:
        response = bob_client.post(f"{URL}{action}/", {"key": alices.pk, "grace": "0"})
        assert response.status_code == 404, action
    alices.refresh_from_db()
    assert alices.status == "active" and alices.replaced_by is None

    assert bob_client.post(f"{URL}disable/", {"key": bobs.pk}, headers=HX).status_code == 200
    assert bob_client.post(f"{URL}enable/", {"key": bobs.pk}, headers=HX).status_code == 200
    response = bob_client.post(f"{URL}rotate/", {"key": bobs.pk, "grace": "0"}, headers=HX)
    assert response.status_code == 200
    assert ApiKey.objects.filter(created_by=bob).count() == 2
    audit = bob_client.get(URL).content.decode().split('id="key-audit"')[1]
    assert "Bobs key" in audit and "Alices key" not in audit


def test_an_admin_sees_and_manages_every_key(alice, bob, acme, member_of_acme):
    admin = member_of_acme(Role.ADMIN)
    client = signed_in(admin)
    bobs, _ = _key(acme, "Bobs key", bob)
    _key(acme, "Alices key", alice)
    page = client.get(URL).content.decode()
    assert "Bobs key" in page and "Alices key" in page
    assert client.post(f"{URL}revoke/", {"key": bobs.pk}, headers=HX).status_code == 200
    bobs.refresh_from_db()
    assert bobs.status == "revoked"
    assert AuditEvent.objects.filter(action="key.revoked", actor=admin, api_key=bobs).exists()


def test_an_admin_rotating_a_developers_key_keeps_the_developer_as_owner(bob, acme, member_of_acme):
    admin = member_of_acme(Role.ADMIN)
    bobs, _ = _key(acme, "Bobs key", bob)
    signed_in(admin).post(f"{URL}rotate/", {"key": bobs.pk, "grace": "0"}, headers=HX)
    new = ApiKey.objects.exclude(pk=bobs.pk).get()
    assert new.created_by == bob
    assert AuditEvent.objects.get(action="key.created", api_key=new).actor == admin


def test_the_audit_log_says_a_key_stopped_because_its_creator_was_removed(
    alice, bob, acme, alice_client
):
    _key(acme, "Bobs key", bob)
    membership = bob.memberships.get(workspace=acme)
    alice_client.post(f"/w/acme/members/{membership.pk}/remove/")
    audit = alice_client.get(URL).content.decode().split('id="key-audit"')[1]
    assert "revoked" in audit and "bob@example.com was removed from the workspace" in audit


def test_a_viewer_gets_403_on_the_page_and_every_action(alice, acme, member_of_acme):
    client = signed_in(member_of_acme(Role.VIEWER))
    key, _ = _key(acme, "Alices key", alice)
    assert client.get(URL).status_code == 403
    assert client.post(f"{URL}new/", {"name": "x", "scopes": ["chat"]}).status_code == 403
    for action in ACTIONS:
        assert client.post(f"{URL}{action}/", {"key": key.pk}).status_code == 403
    key.refresh_from_db()
    assert key.status == "active" and ApiKey.objects.count() == 1


def test_charlie_gets_404_on_acme_keys_and_their_actions(alice, acme, charlie, charlie_client):
    key, secret = _key(acme, "Alices key", alice)
    assert charlie_client.get(URL).status_code == 404
    assert charlie_client.post(f"{URL}new/", {"name": "x", "scopes": ["chat"]}).status_code == 404
    for action in ACTIONS:
        assert charlie_client.post(f"{URL}{action}/", {"key": key.pk}).status_code == 404
        # From his own workspace's URLs, Acme's key does not exist either.
        response = charlie_client.post(f"/w/globex/keys/{action}/", {"key": key.pk, "grace": "0"})
        assert response.status_code == 404
    page = charlie_client.get("/w/globex/keys/").content.decode()
    assert "Alices key" not in page and key.masked not in page
    key.refresh_from_db()
    assert key.status == "active" and ApiKey.objects.count() == 1


def test_a_missing_or_malformed_key_id_is_404(alice_client):
    for value in ("", "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        assert alice_client.post(f"{URL}revoke/", {"key": value}).status_code == 404


def test_keys_of_another_workspace_never_show_in_the_list(alice, alice_client, charlie):
    globex = Workspace.objects.get(slug="globex")
    create_key(workspace=globex, name="Globex secret project", created_by=charlie)
    page = alice_client.get(URL).content.decode()
    assert "Globex secret project" not in page
    assert "No API keys yet" in page


def test_the_page_is_built_and_linked_from_the_navigation(alice_client):
    page = alice_client.get(URL).content.decode()
    nav = page.split('<nav class="nav">')[1].split("</nav>")[0]
    link = re.search(r'<a href="/w/acme/keys/".*?</a>', nav, re.S).group(0)
    assert "Soon" not in link and 'aria-current="page"' in link
