"""The account API: keys, balance, transactions and usage, for admin-scoped keys only."""

import uuid

import httpx
import pytest

from console import ledger
from console.actions import create_key
from console.models import ADMIN_SCOPE, PRODUCT_SCOPES, ApiKey, AuditEvent
from tests.conftest import ACME_CREDIT, settle_books

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
