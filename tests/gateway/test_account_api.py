"""The account API: keys, balance, transactions and usage, for admin-scoped keys only."""

import uuid
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from accounts.actions import remove_member
from accounts.models import Membership
from console import ledger
from console.actions import create_key
from console.models import ADMIN_SCOPE, PRODUCT_SCOPES, ApiKey, AuditEvent
from tests.conftest import ACME_CREDIT, settle_books, tiny_call_with_the_lease_held

CHAT = {"model": "mira", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}


@pytest.fixture
def admin_key(alice, acme) -> str:
    _key, secret = create_key(
        workspace=acme, name="ops", created_by=alice, scopes=[*PRODUCT_SCOPES, ADMIN_SCOPE]
    )
    return secret


@pytest.fixture
def admin(console_url, admin_key):
    with httpx.Client(
        base_url=console_url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
    ) as client:
        yield client


def test_a_key_without_the_admin_scope_gets_403(console_url, api_key):
    for path in ("/api-keys", "/billing/balance", "/billing/transactions", "/usage"):
        response = httpx.get(f"{console_url}{path}", headers={"x-api-key": api_key})
        assert response.status_code == 403, path
        assert "admin scope" in response.json()["detail"]


def test_keys_are_listed_created_once_with_their_secret_and_revoked(admin, console_url):
    listed = admin.get("/api-keys").json()
    assert [k["name"] for k in listed] == ["ops"]
    assert "key" not in listed[0] and listed[0]["key_prefix"].startswith("sk-mira-")

    created = admin.post("/api-keys", json={"name": "ci", "scopes": ["chat"], "rpm_limit": 30})
    assert created.status_code == 201
    body = created.json()
    secret = body["key"]
    assert secret.startswith("sk-mira-") and body["scopes"] == ["chat"] and body["rpm_limit"] == 30
    assert secret not in admin.get("/api-keys").text
    chat = httpx.post(f"{console_url}/chat/completions", json=CHAT, headers={"x-api-key": secret})
    assert chat.status_code == 200

    assert admin.delete(f"/api-keys/{body['id']}").status_code == 204
    assert (
        httpx.post(
            f"{console_url}/chat/completions", json=CHAT, headers={"x-api-key": secret}
        ).status_code
        == 401
    )
    assert [k["name"] for k in admin.get("/api-keys").json()] == ["ops"]
    assert AuditEvent.objects.filter(action="key.revoked", api_key_id=body["id"]).exists()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "The 'name' field is required."),
        ({"name": ""}, "Invalid 'name'"),
        ({"name": "x", "scopes": ["teleport"]}, "unknown scope 'teleport'"),
        ({"name": "x", "rpm_limit": 0}, "Invalid 'rpm_limit'"),
        ({"name": "x", "rpm_limit": 10**30}, "Invalid 'rpm_limit': Input should be less than"),
        ({"name": "x", "tpm_limit": 2**31}, "Invalid 'tpm_limit': Input should be less than"),
        (
            {"name": "x", "monthly_budget_micros": 10**23},
            "Invalid 'monthly_budget_micros': Input should be less than",
        ),
        ({"name": "x", "allowed_models": ["mira pro"]}, "Invalid 'allowed_models.0'"),
    ],
)
def test_a_bad_new_key_is_a_400_naming_the_field_and_creates_nothing(admin, body, detail):
    response = admin.post("/api-keys", json=body)
    assert response.status_code == 400
    assert detail in response.json()["detail"]
    assert ApiKey.objects.count() == 1


def test_another_workspaces_key_ids_are_404(admin, charlie, globex):
    theirs, _secret = create_key(workspace=globex, name="theirs", created_by=charlie)
    assert admin.delete(f"/api-keys/{theirs.pk}").status_code == 404
    assert admin.delete(f"/api-keys/{uuid.uuid4()}").status_code == 404
    assert admin.delete("/api-keys/not-a-uuid").json()["detail"] == "API key not found"
    assert ApiKey.objects.get(pk=theirs.pk).status == "active"


def test_the_balance_and_spend(admin, acme):
    admin.post("/chat/completions", json=CHAT)
    settle_books()
    body = admin.get("/billing/balance").json()
    assert body["currency"] == "USD"
    spent = body["spending"]["month_micros"]
    assert spent > 0 and body["spending"]["today_micros"] == spent
    assert body["balance_micros"] == ACME_CREDIT - spent == ledger.balance_of(acme)
    assert (
        body["balance"]
        == f"{(ACME_CREDIT - spent) // 1_000_000}.{(ACME_CREDIT - spent) % 1_000_000:06d}"
    )
    assert body["spending"]["by_model"][0]["model"] == "mira"
    assert body["spending"]["by_model"][0]["total_requests"] == 1


def test_the_balance_is_what_is_left_after_charges_and_the_lease_is_held_apart(
    admin, asgi_server, admin_key
):
    charge, held = tiny_call_with_the_lease_held(asgi_server.url, admin_key)
    body = admin.get("/billing/balance").json()
    left = ACME_CREDIT - charge
    assert body["balance_micros"] == left
    assert body["balance"] == f"{left // 1_000_000}.{left % 1_000_000:06d}"
    assert body["held_micros"] == held
    assert body["held"] == f"{held // 1_000_000}.{held % 1_000_000:06d}"


def test_each_transaction_says_what_was_left_after_it(admin, asgi_server, admin_key):
    charge, _held = tiny_call_with_the_lease_held(asgi_server.url, admin_key)
    items = admin.get("/billing/transactions").json()
    # The lease (a hold) and the charge taken from it (a release and the charge): only
    # the charge changes what is left.
    assert [(i["type"], i["balance_after_micros"]) for i in items] == [
        ("charge", ACME_CREDIT - charge),
        ("release", ACME_CREDIT),
        ("hold", ACME_CREDIT),
        ("grant", ACME_CREDIT),
    ]
    grants = admin.get("/billing/transactions", params={"type": "grant"}).json()
    assert [i["balance_after_micros"] for i in grants] == [ACME_CREDIT]
    older = admin.get("/billing/transactions", params={"offset": 1, "limit": 2}).json()
    assert [i["balance_after_micros"] for i in older] == [ACME_CREDIT, ACME_CREDIT]


def test_transactions_are_newest_first_filterable_and_checked(admin):
    admin.post("/chat/completions", json=CHAT)
    settle_books()
    items = admin.get("/billing/transactions").json()
    # The worker's lease of credit (hold), the call's charge taken from it (a release and
    # the charge), and the rest of the lease given back (release).
    assert [i["type"] for i in items] == ["release", "charge", "release", "hold", "grant"]
    charge = items[1]
    assert charge["amount_micros"] < 0 and charge["model"] == "mira" and charge["input_tokens"] > 0
    assert [
        i["type"] for i in admin.get("/billing/transactions", params={"type": "grant"}).json()
    ] == ["grant"]
    assert len(admin.get("/billing/transactions", params={"limit": 1, "offset": 1}).json()) == 1
    bad = admin.get("/billing/transactions", params={"type": "bonus"})
    assert bad.status_code == 400
    assert bad.json()["detail"] == "Type must be one of: grant, charge, refund, hold, release"
    assert admin.get("/billing/transactions", params={"limit": 500}).status_code == 400


@pytest.mark.parametrize("offset", [str(10**23), "1e23", "--5", "-1", "١٢", "1" * 5000])
def test_a_page_offset_out_of_bounds_is_a_400_naming_it(admin, offset):
    response = admin.get("/billing/transactions", params={"offset": offset})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "The 'offset' parameter must be a whole number from 0 to 1000000000."
    )


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/billing/transactions", {"type": ""}, None),
        ("/billing/transactions", {"limit": ""}, "limit"),
        ("/usage", {"start_date": ""}, "start_date"),
        ("/usage", {"end_date": "20260131"}, "end_date"),
        ("/usage", {"group_by": ""}, "group_by"),
        ("/usage", {"api_key_id": ""}, "api_key_id"),
    ],
)
def test_a_query_parameter_sent_empty_or_malformed_is_a_400_naming_it(admin, path, params, name):
    response = admin.get(path, params=params)
    assert response.status_code == 400
    assert name is None or f"'{name}'" in response.json()["detail"]


def test_usage_totals_and_groups(admin):
    admin.post("/chat/completions", json=CHAT)
    admin.post("/embeddings", json={"model": "mira-embed", "input": "hello"})
    settle_books()
    body = admin.get("/usage", params={"group_by": "product"}).json()
    assert body["total"]["requests"] == 2
    assert {g["key"] for g in body["groups"]} == {"chat", "embeddings"}
    by_day = admin.get("/usage").json()
    assert len(by_day["groups"]) == 1 and by_day["groups"][0]["requests"] == 2
    assert admin.get("/usage", params={"start_date": "yesterday"}).status_code == 400
    assert admin.get("/usage", params={"group_by": "planet"}).status_code == 400
    assert (
        admin.get(
            "/usage", params={"start_date": "2030-01-02", "end_date": "2030-01-01"}
        ).status_code
        == 400
    )


# ---------- a key made with a key never has more than that key ----------


@pytest.fixture
def bobs_key(bob, acme) -> ApiKey:
    """An admin key of Bob's that may only chat with mira, within limits, for 30 days."""
    key, secret = create_key(
        workspace=acme,
        name="limited",
        created_by=bob,
        scopes=["chat", ADMIN_SCOPE],
        allowed_models=["mira"],
        rpm_limit=60,
        tpm_limit=10_000,
        monthly_budget=5_000_000,
        expires_at=timezone.now() + timedelta(days=30),
    )
    key.secret = secret
    return key


@pytest.fixture
def limited(console_url, bobs_key):
    with httpx.Client(
        base_url=console_url, headers={"x-api-key": bobs_key.secret}, timeout=30
    ) as client:
        yield client


def test_a_key_made_with_a_key_records_that_key_and_its_person(admin, alice):
    ops = ApiKey.objects.get(name="ops")
    body = admin.post("/api-keys", json={"name": "ci"}).json()
    assert body["created_by_key"] == str(ops.pk)
    made = ApiKey.objects.get(pk=body["id"])
    assert (made.created_by, made.created_by_key) == (alice, ops)
    event = AuditEvent.objects.get(action="key.created", api_key=made)
    assert (event.actor, event.detail["by_key"]) == (alice, str(ops.pk))
    listed = {k["name"]: k["created_by_key"] for k in admin.get("/api-keys").json()}
    assert listed == {"ops": None, "ci": str(ops.pk)}


@pytest.mark.parametrize(
    ("asked", "detail"),
    [
        ({"scopes": ["chat", "images"]}, "scopes: images is beyond this key's scopes"),
        (
            {"allowed_models": ["mira", "mira-pro"]},
            "allowed_models: mira-pro is beyond this key's models",
        ),
        ({"rpm_limit": 61}, "rpm_limit: 61 is beyond this key's limit of 60"),
        ({"tpm_limit": 10_001}, "tpm_limit: 10001 is beyond this key's limit of 10000"),
        (
            {"monthly_budget_micros": 5_000_001},
            "monthly_budget_micros: 5000001 is beyond this key's budget of 5000000",
        ),
        ({"expires_in_days": 31}, "expires_in_days: 31 days is beyond this key, which expires"),
    ],
)
def test_asking_for_more_than_the_creating_key_has_is_a_403_naming_it(
    limited, bobs_key, asked, detail
):
    response = limited.post("/api-keys", json={"name": "more"} | asked)
    assert response.status_code == 403
    assert response.json()["detail"].startswith(detail)
    assert response.json()["error"]["type"] == "permission_error"
    assert list(ApiKey.objects.values_list("name", flat=True)) == ["limited"]


def test_what_a_new_key_leaves_out_it_gets_from_the_creating_key(limited, bobs_key, bob):
    body = limited.post("/api-keys", json={"name": "child", "allowed_models": []}).json()
    made = ApiKey.objects.get(pk=body["id"])
    assert made.scopes == ["chat"]  # the creator's products; the admin scope is asked for
    assert made.allowed_models == ["mira"]  # never "every model"
    assert (made.rpm_limit, made.tpm_limit, made.monthly_budget) == (60, 10_000, 5_000_000)
    assert made.expires_at == bobs_key.expires_at
    assert (made.created_by, made.created_by_key) == (bob, bobs_key)


def test_a_new_key_may_ask_for_less_than_the_creating_key(limited, console_url):
    asked = {
        "name": "smaller",
        "scopes": ["chat", ADMIN_SCOPE],
        "allowed_models": ["mira"],
        "rpm_limit": 10,
        "tpm_limit": 500,
        "monthly_budget_micros": 1_000_000,
        "expires_in_days": 7,
    }
    response = limited.post("/api-keys", json=asked)
    assert response.status_code == 201
    body = response.json()
    assert (body["scopes"], body["rpm_limit"], body["monthly_budget_micros"]) == (
        ["chat", ADMIN_SCOPE],
        10,
        1_000_000,
    )
    chat = httpx.post(
        f"{console_url}/chat/completions", json=CHAT, headers={"x-api-key": body["key"]}
    )
    assert chat.status_code == 200


def test_keys_made_with_a_members_key_stop_when_the_member_leaves(limited, console_url, bob, acme):
    secret = limited.post("/api-keys", json={"name": "child"}).json()["key"]
    remove_member(membership=Membership.objects.get(user=bob), by=Membership.objects.get(user=bob))
    chat = httpx.post(f"{console_url}/chat/completions", json=CHAT, headers={"x-api-key": secret})
    assert chat.status_code == 401
    assert limited.post("/api-keys", json={"name": "after"}).status_code == 401
