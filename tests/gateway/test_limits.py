"""Requests- and tokens-per-minute limits per key: exact under concurrency, with headers."""

from concurrent.futures import ThreadPoolExecutor

import httpx

from console.actions import create_key
from tests.conftest import usage_records, within_one_minute

CHAT = {"model": "mira", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _post(url: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{url}/chat/completions", json=CHAT, headers={"x-api-key": secret}, timeout=30
    )


def test_exactly_the_limit_gets_through_under_concurrent_calls(console_url, alice, acme):
    _key, secret = create_key(workspace=acme, name="limited", created_by=alice, rpm_limit=7)
    within_one_minute()
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: _post(console_url, secret), range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 7 and statuses.count(429) == 13
    refused = next(r for r in responses if r.status_code == 429)
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "7"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert "7 requests per minute" in refused.json()["detail"]
    assert usage_records().count() == 7


def test_every_response_carries_the_rate_limit_headers(console_url, alice, acme):
    _key, secret = create_key(
        workspace=acme, name="limited", created_by=alice, rpm_limit=5, tpm_limit=1000
    )
    within_one_minute()
    first = _post(console_url, secret)
    second = _post(console_url, secret)
    assert first.headers["x-ratelimit-limit-requests"] == "5"
    assert first.headers["x-ratelimit-remaining-requests"] == "4"
    assert second.headers["x-ratelimit-remaining-requests"] == "3"
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    used = first.json()["usage"]["total_tokens"]
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 1000 - used
    assert second.headers["x-ratelimit-reset-requests"].endswith("s")


def test_the_token_limit_refuses_calls_once_spent(console_url, alice, acme):
    _key, secret = create_key(workspace=acme, name="few tokens", created_by=alice, tpm_limit=5)
    within_one_minute()
    assert _post(console_url, secret).status_code == 200
    refused = _post(console_url, secret)
    assert refused.status_code == 429
    assert "5 tokens per minute" in refused.json()["detail"]


def test_limits_are_per_key(console_url, alice, acme):
    _a, first = create_key(workspace=acme, name="a", created_by=alice, rpm_limit=1)
    _b, second = create_key(workspace=acme, name="b", created_by=alice, rpm_limit=1)
    within_one_minute()
    assert _post(console_url, first).status_code == 200
    assert _post(console_url, first).status_code == 429
    assert _post(console_url, second).status_code == 200
