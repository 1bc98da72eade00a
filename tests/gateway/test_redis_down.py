"""With REDIS_URL set and Redis stopped, the console keeps answering: key checks from the
database, rate limits counted per worker, sign-in throttled in memory; nothing is a 500,
and sharing resumes when Redis is back, without a restart."""

import logging
import time

import httpx
import redis
from django.test import Client

from console import keys
from console.actions import create_key
from console.shared import RETRY_SECONDS
from tests.conftest import signed_in, within_one_minute

CHAT = {"model": "mira", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _post(url: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{url}/chat/completions", json=CHAT, headers={"x-api-key": secret}, timeout=30
    )


def test_with_redis_stopped_nothing_is_a_500_and_sharing_resumes_when_it_is_back(
    asgi_server, upstream_fleet, redis_server, settings, alice, acme, caplog
):
    settings.REDIS_URL = redis_server.url
    settings.CACHES = {
        "default": {
            "BACKEND": "console.cache.ResilientRedisCache",
            "LOCATION": redis_server.url,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    url = f"{asgi_server.url}/v1"
    key, secret = create_key(workspace=acme, name="limited", created_by=alice, rpm_limit=4)
    shared = redis.Redis.from_url(redis_server.url, decode_responses=True)
    within_one_minute()
    assert _post(url, secret).status_code == 200
    assert shared.exists(f"apikey:{keys.hash_secret(secret)}")
    assert shared.keys("rl:*")

    redis_server.stop()
    caplog.set_level(logging.WARNING)
    # Calls: the key is checked in the database, the limit counted in this worker (it
    # still holds: 4 a minute, of which one was counted in Redis).
    statuses = [_post(url, secret).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    assert "Redis cannot be reached" in caplog.text
    # Pages, and a sign-in, whose throttle lives in the cache.
    alice_client = signed_in(alice)
    assert alice_client.get("/w/acme/").status_code == 200
    failed = Client().post("/accounts/login/", {"login": "alice@example.com", "password": "no"})
    assert failed.status_code == 200
    assert "not correct" in failed.content.decode()
    # A key revoked while Redis is down stops within a second.
    response = alice_client.post("/w/acme/keys/revoke/", {"key": key.pk})
    assert response.status_code == 302
    time.sleep(1.0)
    assert _post(url, secret).status_code == 401

    redis_server.start()
    _other, other_secret = create_key(workspace=acme, name="after", created_by=alice)
    time.sleep(RETRY_SECONDS + 0.1)
    assert _post(url, other_secret).status_code == 200
    assert shared.exists(f"apikey:{keys.hash_secret(other_secret)}")
    assert shared.keys("rl:*")
    assert "Redis is back" in caplog.text
    assert _post(url, secret).status_code == 401
