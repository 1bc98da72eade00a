"""Two worker processes sharing Redis: a revoked key (or a removed member's) stops everywhere
within a second, a removed member's playground sockets close on every worker, and a rate
limit is exact across workers."""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from accounts.actions import remove_member
from accounts.models import Membership
from console.actions import create_key
from console.models import ApiKey
from tests.conftest import free_port, signed_in, within_one_minute
from tests.upstream_fixtures import TEST_KEY

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "mira", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def workers(transactional_db, simulator, redis_url):
    """The console served by two uvicorn worker processes on one port, sharing Redis."""
    port = free_port()
    env = os.environ | {
        "MIRA_TESTING": "1",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": redis_url,
        "MIRA_API_BASE": simulator.base_url,
        "MIRA_API_KEY": TEST_KEY,
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "2", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=20)


def _post(url: str, secret: str) -> int:
    return httpx.post(
        f"{url}/chat/completions", json=CHAT, headers={"x-api-key": secret}, timeout=30
    ).status_code


def _models(url: str, secret: str) -> int:
    return httpx.get(f"{url}/models", headers={"x-api-key": secret}, timeout=30).status_code


def test_a_revoked_key_stops_on_every_worker_within_a_second(workers, redis_url, alice, acme):
    _key, secret = create_key(workspace=acme, name="shared", created_by=alice)
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(lambda _: _post(workers, secret), range(24))) == {200}
    with override_settings(REDIS_URL=redis_url):
        ApiKey.objects.get().revoke()
    time.sleep(1.0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(lambda _: _post(workers, secret), range(24))) == {401}


def test_a_lookup_while_a_revocation_commits_cannot_bring_the_key_back(
    workers, redis_url, alice, acme
):
    key, secret = create_key(workspace=acme, name="shared", created_by=alice)
    assert _post(workers, secret) == 200
    with override_settings(REDIS_URL=redis_url), transaction.atomic():
        key.revoke()
        # Before the commit, both workers look the key up again (their own copies are
        # older than a second): they read the row as it was, active, and share it. (A
        # list of models needs the key and writes nothing, which SQLite would make wait.)
        time.sleep(1.0)
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(lambda _: _models(workers, secret), range(16))) == {200}
    time.sleep(1.0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(lambda _: _post(workers, secret), range(24))) == {401}


def test_a_removed_members_keys_stop_on_every_worker_within_a_second(
    workers, redis_url, alice, bob, acme
):
    secrets = [create_key(workspace=acme, name=n, created_by=bob)[1] for n in ("ci", "deploy")]
    _key, alices = create_key(workspace=acme, name="alice's", created_by=alice)
    calls = [*secrets, alices] * 8
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(lambda secret: _post(workers, secret), calls)) == {200}
    with override_settings(REDIS_URL=redis_url):
        remove_member(
            membership=Membership.objects.get(user=bob),
            by=Membership.objects.get(user=alice),
        )
    time.sleep(1.0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(lambda secret: _post(workers, secret), calls)) == [401, 401, 200] * 8


def test_removing_a_member_closes_their_playground_sockets_on_every_worker(
    workers, redis_url, alice, bob, acme
):
    cookie = signed_in(bob).cookies[settings.SESSION_COOKIE_NAME].value
    origin = workers.removesuffix("/v1")
    layer = {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [redis_url]}}
    codes = []
    with ExitStack() as stack:
        # Several sockets, so that both workers hold some of them.
        sockets = [
            stack.enter_context(
                connect(
                    f"{origin.replace('http', 'ws')}/ws/playground/acme/",
                    origin=origin,
                    additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"},
                )
            )
            for _ in range(6)
        ]
        with override_settings(REDIS_URL=redis_url, CHANNEL_LAYERS={"default": layer}):
            remove_member(
                membership=Membership.objects.get(user=bob),
                by=Membership.objects.get(user=alice),
            )
        for socket in sockets:
            with pytest.raises(ConnectionClosed) as closed:
                socket.recv(timeout=5)
            codes.append(closed.value.rcvd.code)
    assert codes == [4403] * 6


def test_a_rate_limit_is_exact_across_workers(workers, alice, acme):
    _key, secret = create_key(workspace=acme, name="limited", created_by=alice, rpm_limit=10)
    within_one_minute()
    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = list(pool.map(lambda _: _post(workers, secret), range(30)))
    assert statuses.count(200) == 10 and statuses.count(429) == 20


def test_a_key_revoked_while_redis_does_not_answer_stays_revoked_once_it_does(
    workers, redis_url, alice, acme
):
    key, secret = create_key(workspace=acme, name="shared", created_by=alice)
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(lambda _: _post(workers, secret), range(16))) == {200}
    redis.Redis.from_url(redis_url).execute_command("CLIENT", "PAUSE", 3000, "ALL")
    paused = time.monotonic()
    with override_settings(REDIS_URL=redis_url):
        key.revoke()  # its shared entry cannot be retired now
    time.sleep(1.0)
    # The workers check keys in the database while Redis does not answer...
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(lambda _: _post(workers, secret), range(16))) == {401}
    # ...and do not believe the entry Redis still holds once it answers again.
    time.sleep(max(0.0, paused + 3.2 - time.monotonic()))
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(lambda _: _post(workers, secret), range(24))) == {401}
