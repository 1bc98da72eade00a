"""Every error the /v1 API gives: the right status, a `detail` naming what is wrong, no record."""

import json
import socket
from datetime import date, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from django.test import override_settings
from django.utils import timezone

from console.actions import create_key
from console.models import ADMIN_SCOPE, PRODUCT_SCOPES, ApiKey
from tests.conftest import usage_records

CHAT = {"model": "mira", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def api(console_url, api_key):
    with httpx.Client(
        base_url=console_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as client:
        yield client


def _detail(response: httpx.Response) -> str:
    body = response.json()
    assert body["error"]["message"] == body["detail"]
    return body["detail"]


def test_every_response_has_a_request_id(api):
    ok = api.get("/models")
    bad = api.post("/chat/completions", json={})
    assert ok.headers["x-request-id"].startswith("req_")
    assert (
        bad.headers["x-request-id"].startswith("req_")
        and bad.headers["x-request-id"] != ok.headers["x-request-id"]
    )


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"messages": CHAT["messages"]}, "The 'model' field is required."),
        ({"model": "mira"}, "The 'messages' field is required."),
        (CHAT | {"temperature": 5}, "Invalid 'temperature'"),
        (CHAT | {"messages": [{"role": "wizard", "content": "x"}]}, "Invalid 'messages.0.role'"),
        (CHAT | {"max_tokens": "lots"}, "Invalid 'max_tokens'"),
        (
            CHAT | {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "Invalid 'messages.0.content'",
        ),
    ],
)
def test_a_bad_field_is_a_400_that_names_it(api, body, detail):
    response = api.post("/chat/completions", json=body)
    assert response.status_code == 400
    assert _detail(response).startswith(detail)
    assert not usage_records().exists()


def test_malformed_json_is_a_400(api):
    response = api.post(
        "/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in _detail(response)


def test_an_unknown_model_is_the_upstreams_400_with_its_detail(api):
    response = api.post("/chat/completions", json=CHAT | {"model": "gpt-17"})
    assert response.status_code == 400
    assert "mira" in _detail(response)


def test_a_missing_key_is_401(console_url, db):
    response = httpx.post(f"{console_url}/chat/completions", json=CHAT)
    assert response.status_code == 401
    assert _detail(response) == "API key required"


@pytest.mark.parametrize("secret", ["sk-other-123", "sk-mira-" + "a" * 46, "not a key"])
def test_a_malformed_or_unknown_key_is_401(console_url, db, secret):
    response = httpx.post(
        f"{console_url}/chat/completions", json=CHAT, headers={"x-api-key": secret}
    )
    assert response.status_code == 401
    assert _detail(response) == "Invalid API key"


def test_the_x_api_key_header_works_too(console_url, api_key):
    response = httpx.post(
        f"{console_url}/chat/completions", json=CHAT, headers={"x-api-key": api_key}
    )
    assert response.status_code == 200


@pytest.mark.parametrize("change", ["revoke", "disable", "expire"])
def test_a_revoked_disabled_or_expired_key_is_401(api, change):
    key = ApiKey.objects.get()
    if change == "expire":
        key.expires_at = timezone.now() - timedelta(seconds=1)
        key.save()
    else:
        getattr(key, change)()
    response = api.post("/chat/completions", json=CHAT)
    assert response.status_code == 401
    assert "revoked" in _detail(response) or "expired" in _detail(response)


def test_a_product_outside_the_keys_scopes_is_403(console_url, alice, acme):
    _key, secret = create_key(
        workspace=acme, name="embed only", created_by=alice, scopes=["embeddings"]
    )
    response = httpx.post(
        f"{console_url}/chat/completions", json=CHAT, headers={"x-api-key": secret}
    )
    assert response.status_code == 403
    assert _detail(response) == "This API key is not allowed to use chat."
    assert not usage_records().exists()


def test_a_model_outside_the_allow_list_is_403_and_hidden_from_the_list(console_url, alice, acme):
    _key, secret = create_key(
        workspace=acme, name="fast only", created_by=alice, allowed_models=["mira"]
    )
    headers = {"x-api-key": secret}
    response = httpx.post(
        f"{console_url}/chat/completions", json=CHAT | {"model": "mira-max"}, headers=headers
    )
    assert response.status_code == 403
    assert "may not use the model mira-max" in _detail(response)
    ids = [m["id"] for m in httpx.get(f"{console_url}/models", headers=headers).json()["data"]]
    assert ids == ["mira"]


def test_an_unknown_endpoint_is_404(api):
    response = api.get("/nothing/here")
    assert response.status_code == 404
    assert "No endpoint at /v1/nothing/here" in _detail(response)


def test_a_path_with_an_encoded_newline_is_the_apis_json_404(api):
    response = api.get("/nothing%0Ahere")
    assert response.status_code == 404
    assert "No endpoint at /v1/nothing\nhere" in _detail(response)
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize("path", ["/image", "/upload", "/files/file_1/content"])
def test_the_media_paths_without_a_version_say_a_version_is_required(asgi_server, path):
    response = httpx.post(f"{asgi_server.url}{path}", json={"prompt": "A cat"})
    assert response.status_code == 404
    assert f"/v1{path}" in _detail(response)


def test_no_version_is_404_saying_a_version_is_required(asgi_server, api_key):
    response = httpx.post(
        f"{asgi_server.url}/chat/completions", json=CHAT, headers={"x-api-key": api_key}
    )
    assert response.status_code == 404
    assert "An API version is required" in _detail(response)
    assert "/v1/chat/completions" in _detail(response)


def test_an_unknown_version_is_404(asgi_server, api_key):
    response = httpx.get(f"{asgi_server.url}/v9/models", headers={"x-api-key": api_key})
    assert response.status_code == 404
    assert _detail(response) == "Unknown API version v9. Available: v1."


def test_a_deprecated_version_answers_with_deprecation_headers(
    asgi_server, api_key, upstream_fleet
):
    versions = {
        "v1": {},
        "v0": {
            "serves": "v1",
            "deprecated": date(2026, 1, 1),
            "sunset": date(2099, 1, 1),
            "link": "https://docs.example.com/v0-to-v1",
        },
    }
    with override_settings(API_VERSIONS=versions):
        response = httpx.get(f"{asgi_server.url}/v0/models", headers={"x-api-key": api_key})
    assert response.status_code == 200
    assert response.headers["Deprecation"] == "Thu, 01 Jan 2026 00:00:00 GMT"
    assert response.headers["Sunset"] == "Thu, 01 Jan 2099 00:00:00 GMT"
    assert response.headers["Link"] == '<https://docs.example.com/v0-to-v1>; rel="deprecation"'


def test_a_version_past_its_sunset_is_410(asgi_server, api_key):
    versions = {
        "v1": {},
        "v0": {"serves": "v1", "deprecated": date(2024, 1, 1), "sunset": date(2025, 1, 1)},
    }
    with override_settings(API_VERSIONS=versions):
        response = httpx.get(f"{asgi_server.url}/v0/models", headers={"x-api-key": api_key})
    assert response.status_code == 410
    assert "removed on 2025-01-01" in _detail(response)


def test_a_wrong_method_is_405(api):
    response = api.get("/chat/completions")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert "use POST" in _detail(response)


def test_an_oversized_body_is_413_and_nothing_is_recorded(api):
    huge = CHAT | {"messages": [{"role": "user", "content": "x" * (3 * 1024 * 1024)}]}
    response = api.post("/chat/completions", json=huge)
    assert response.status_code == 413
    assert "too large" in _detail(response)
    assert not usage_records().exists()


def _raw_exchange(url: str, head: str, parts: list[bytes] = ()) -> tuple[int, dict, bytes]:
    """Send a request's head and body parts over a plain socket, then read the answer
    (to the length it announces: the connection stays open for what the client still
    has to send)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for part in parts:
            sock.sendall(part)
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head_bytes, _, body = received.partition(b"\r\n\r\n")
        status_line, *lines = head_bytes.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        while len(body) < int(headers.get("content-length", 0)):
            body += sock.recv(65536)
    return int(status_line.split()[1]), headers, body


def test_an_oversized_body_is_refused_from_its_length_before_it_is_read_or_the_key_checked(
    console_url,
):
    # Nothing of the 3 MiB announced is sent: a console that read the body first would wait.
    status, headers, body = _raw_exchange(
        console_url,
        "POST /v1/chat/completions HTTP/1.1\nHost: localhost\nAuthorization: Bearer sk-mira-wrong\n"
        f"Content-Type: application/json\nContent-Length: {3 * 1024 * 1024}\n",
    )
    assert status == 413
    assert json.loads(body)["detail"] == "Request body too large: the limit is 2 MiB."
    assert headers["x-request-id"].startswith("req_")


def test_an_upload_may_be_larger_than_json_but_not_past_its_own_limit(console_url):
    head = (
        "POST /v1/chat/completions HTTP/1.1\nHost: localhost\nAuthorization: Bearer sk-mira-wrong\n"
        "Content-Type: multipart/form-data; boundary=x\nContent-Length: {}\n"
    )
    status, _headers, body = _raw_exchange(console_url, head.format(26 * 1024 * 1024))
    assert status == 413
    assert json.loads(body)["detail"] == "Request body too large: the limit is 25 MiB."
    # Under the upload limit, the body is read, and the key is checked as usual.
    status, _headers, body = _raw_exchange(console_url, head.format(4), [b"--x\n"])
    assert status == 401


def test_a_chunked_body_is_cut_off_at_the_limit_while_it_is_read(console_url):
    # 2 MiB in 64 KiB chunks is allowed; one byte more is not. The last chunk (`0`) is
    # never sent: a console that read the whole body before answering would wait for it.
    piece = b"x" * 65536
    parts = [b"10000\r\n" + piece + b"\r\n"] * 32 + [b"1\r\nx\r\n"]
    status, _headers, body = _raw_exchange(
        console_url,
        "POST /v1/messages HTTP/1.1\nHost: localhost\nx-api-key: sk-mira-wrong\n"
        "Content-Type: application/json\nTransfer-Encoding: chunked\n",
        parts,
    )
    assert status == 413
    assert json.loads(body)["error"] == {
        "type": "request_too_large",
        "message": "Request body too large: the limit is 2 MiB.",
    }


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/chat/completions", CHAT | {"max_tokens": 10**30}, "max_tokens"),
        ("/chat/completions", CHAT | {"max_completion_tokens": 10**23}, "max_completion_tokens"),
        ("/chat/completions", CHAT | {"n": 10**30}, "n"),
        (
            "/responses",
            {"model": "mira", "input": "hi", "max_output_tokens": 10**30},
            "max_output_tokens",
        ),
        (
            "/messages",
            {"model": "mira", "max_tokens": 10**30, "messages": CHAT["messages"]},
            "max_tokens",
        ),
        (
            "/messages",
            {"model": "mira", "max_tokens": 5, "top_k": 10**30, "messages": CHAT["messages"]},
            "top_k",
        ),
        ("/embeddings", {"model": "mira-embed", "input": "hi", "dimensions": 10**30}, "dimensions"),
    ],
)
def test_an_integer_past_its_bound_is_a_400_naming_it(api, path, body, field):
    response = api.post(path, json=body)
    assert response.status_code == 400
    assert f"Invalid '{field}': Input should be less than or equal to" in _detail(response)
    assert not usage_records().exists()


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("/chat/completions", CHAT | {"max_tokens": "5"}, "Invalid 'max_tokens'"),
        ("/chat/completions", CHAT | {"stream": "true"}, "Invalid 'stream'"),
        ("/messages", {"model": "mira", "max_tokens": 5, "stream": 0, "messages": CHAT["messages"]},
         "Invalid 'stream'"),
        ("/api-keys", {"name": "x", "monthly_budget_micros": False}, "Invalid 'monthly_budget_micros'"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_json_type_is_a_400_not_converted(
    console_url, alice, acme, path, body, detail
):
    _key, secret = create_key(
        workspace=acme, name="admin", created_by=alice, scopes=[*PRODUCT_SCOPES, ADMIN_SCOPE]
    )
    response = httpx.post(f"{console_url}{path}", json=body, headers={"x-api-key": secret})
    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail)


@pytest.mark.parametrize(
    ("path", "content", "detail"),
    [
        ("/chat/completions", [{"type": "text", "text": 5}], "Invalid 'messages.0.content'"),
        ("/messages", [{"type": "text", "text": {"a": 1}}], "Invalid 'messages.0.content.0.text': must be a string."),
    ],
)  # fmt: skip
def test_a_text_part_whose_text_is_not_a_string_is_a_400(api, path, content, detail):
    body = {"model": "mira", "max_tokens": 5, "messages": [{"role": "user", "content": content}]}
    response = api.post(path, json=body)
    assert response.status_code == 400
    assert _detail(response).startswith(detail)


def test_a_tool_result_of_any_json_shape_is_passed_on_without_a_500(api):
    blocks = [{"type": "tool_result", "tool_use_id": "call_1", "content": {"rows": [1, 2]}}]
    body = {"model": "mira", "max_tokens": 5, "messages": [{"role": "user", "content": blocks}]}
    assert api.post("/messages", json=body).status_code == 200


def test_json_nested_200000_levels_deep_is_a_400(api):
    deep = b'{"model": "mira", "messages": [{"role": "user", "content": "hi"}], "tools": '
    deep += b"[" * 200_000 + b"]" * 200_000 + b"}"
    response = api.post(
        "/chat/completions", content=deep, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert _detail(response) == (
        "The request body is nested too deeply: at most 64 levels of arrays and objects."
    )


def test_json_nested_past_64_levels_is_a_400_and_up_to_64_is_served(api):
    def schema(levels: int) -> dict:
        # The body, response_format, json_schema and schema are four levels; each object
        # property adds two more.
        inner: dict = {"type": "string"}
        for _ in range((levels - 4) // 2):
            inner = {"type": "object", "properties": {"a": inner}}
        return CHAT | {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": inner},
            }
        }

    deep = api.post("/chat/completions", json=schema(66))
    assert deep.status_code == 400 and "nested too deeply" in _detail(deep)
    assert api.post("/chat/completions", json=schema(64)).status_code == 200


@pytest.mark.parametrize(("status", "expected"), [(500, 502), (502, 502), (503, 503)])
def test_upstream_failures_are_502_or_503_and_recorded(api, status, expected):
    response = api.post("/chat/completions", json=CHAT, headers={"x-sim-status": str(status)})
    assert response.status_code == expected
    assert "The upstream failed" in _detail(response)
    record = usage_records().get()
    assert record.status == expected and record.error


def test_an_upstream_timeout_is_504(api, upstream_fleet):
    from dataclasses import replace

    upstream_fleet.options = replace(
        upstream_fleet.options,
        timeouts=replace(upstream_fleet.options.timeouts, first_byte=0.3),
        max_attempts=1,
    )
    response = api.post("/chat/completions", json=CHAT, headers={"x-sim-hang": "1"})
    assert response.status_code == 504
    assert "did not answer in time" in _detail(response)
    assert usage_records().get().status == 504


def test_an_upstream_429_passes_its_retry_after_on(api, upstream_fleet):
    from dataclasses import replace

    upstream_fleet.options = replace(upstream_fleet.options, max_attempts=1)
    response = api.post(
        "/chat/completions", json=CHAT, headers={"x-sim-status": "429", "x-sim-retry-after": "7"}
    )
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"


def test_messages_errors_use_anthropics_envelope(api):
    response = api.post(
        "/messages", json={"model": "mira", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"] == {
        "type": "invalid_request_error",
        "message": "The 'max_tokens' field is required.",
    }
