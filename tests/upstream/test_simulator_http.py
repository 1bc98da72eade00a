"""The simulator answers like Mira: auth, validation, unknown routes, request ids."""

import httpx
import pytest

from tests.upstream_fixtures import TEST_KEY

CHAT = "/v1/chat/completions"
HELLO = {"model": "mira", "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture
def http(simulator):
    with httpx.Client(base_url=simulator.url, headers={"Authorization": f"Bearer {TEST_KEY}"}) as c:
        yield c


def test_it_requires_a_key(simulator):
    response = httpx.post(simulator.url + CHAT, json=HELLO)
    assert response.status_code == 401
    assert response.json() == {"detail": "API key required"}


def test_it_treats_a_bearer_header_without_a_token_as_missing(simulator):
    response = httpx.post(simulator.url + CHAT, json=HELLO, headers={"Authorization": "Bearer"})
    assert response.status_code == 401
    assert response.json() == {"detail": "API key required"}


def test_it_rejects_a_key_without_the_mira_prefix(simulator):
    headers = {"Authorization": "Bearer sk-openai-123"}
    response = httpx.post(simulator.url + CHAT, json=HELLO, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API key"}


def test_it_accepts_only_the_configured_key_when_given_one(start_simulator):
    server = start_simulator(key="sk-mira-" + "a" * 40)
    wrong = httpx.post(
        server.url + CHAT, json=HELLO, headers={"Authorization": "Bearer sk-mira-" + "b" * 40}
    )
    right = httpx.post(
        server.url + CHAT, json=HELLO, headers={"Authorization": f"Bearer {server.key}"}
    )
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": "Invalid API key"}
    assert right.status_code == 200


def test_it_names_the_missing_model_field(http):
    response = http.post(CHAT, json={"messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 400
    assert response.json() == {"detail": "The 'model' field is required."}


def test_it_names_the_allowed_models_for_an_unknown_one(http):
    response = http.post(CHAT, json={**HELLO, "model": "gpt-4"})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "Invalid model. Must be one of: mira, mira-thinking, mira-pro, mira-max"
    )


def test_it_names_a_field_of_the_wrong_type(http):
    response = http.post(CHAT, json={**HELLO, "temperature": "hot"})
    assert response.status_code == 400
    assert "'temperature'" in response.json()["detail"]


def test_it_names_a_missing_nested_field(http):
    response = http.post(CHAT, json={"model": "mira", "messages": [{"content": "Hi"}]})
    assert response.status_code == 400
    assert response.json()["detail"] == "The 'messages[0].role' field is required."


def test_it_rejects_a_body_that_is_not_json(http):
    response = http.post(CHAT, content=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"detail": "Request body is not valid JSON."}


def test_it_answers_an_unknown_route_with_a_detail(http):
    response = http.post("/v1/teleport")
    assert response.status_code == 404
    assert response.json() == {"detail": "Endpoint not found: POST /v1/teleport"}


def test_it_refuses_a_path_without_a_version(http):
    response = http.post("/chat/completions", json=HELLO)
    assert response.status_code == 404
    assert "without a version" in response.json()["detail"]


def test_it_answers_a_wrong_method_with_405(http):
    response = http.get(CHAT)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "detail" in response.json()


def test_every_response_has_a_request_id(http):
    ok = http.get("/v1/models")
    missing = http.post("/v1/teleport")
    invalid = http.post(CHAT, json={})
    ids = {r.headers["x-request-id"] for r in (ok, missing, invalid)}
    assert len(ids) == 3


def test_it_lists_models_without_a_key(simulator):
    response = httpx.get(simulator.url + "/v1/models")
    assert response.status_code == 200
    ids = [m["id"] for m in response.json()["data"]]
    assert ids[:4] == ["mira", "mira-thinking", "mira-pro", "mira-max"]
    assert "mira-embed" in ids
    assert all(m["object"] == "model" and m["owned_by"] == "vmira" for m in response.json()["data"])
    assert response.json()["data"][0]["context_window"] == 32768


def test_it_retrieves_one_model_and_404s_an_unknown_one(http):
    assert http.get("/v1/models/mira-pro").json()["max_output_tokens"] == 8192
    assert http.get("/v1/models/nope").status_code == 404


def test_it_injects_a_status_with_retry_after_on_request(http):
    response = http.post(
        CHAT, json=HELLO, headers={"x-sim-status": "429", "x-sim-retry-after": "7"}
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json() == {"detail": "Rate limit exceeded, retry after 7 seconds"}


def test_a_server_wide_failure_applies_to_every_call(start_simulator):
    server = start_simulator(fail_status=503, fail_retry_after=2)
    headers = {"Authorization": f"Bearer {TEST_KEY}"}
    response = httpx.post(server.url + CHAT, json=HELLO, headers=headers)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert httpx.get(server.url + "/v1/models").status_code == 503


def test_its_settings_can_be_changed_while_it_runs(start_simulator):
    server = start_simulator()
    changed = httpx.post(server.url + "/_sim/config", json={"fail_status": 500})
    assert changed.json()["fail_status"] == 500
    assert httpx.get(server.url + "/v1/models").status_code == 500
    assert httpx.post(server.url + "/_sim/config", json={"key": "x"}).status_code == 400


def test_it_counts_what_it_served(start_simulator):
    server = start_simulator()
    httpx.get(server.url + "/v1/models")
    stats = httpx.get(server.url + "/_sim/stats").json()
    assert stats["by_route"]["GET /v1/models"] == 1
    assert stats["open_streams"] == 0
    assert stats["open_connections"] >= 1
