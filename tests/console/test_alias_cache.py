"""Each worker's copy of a workspace's aliases: no query while nothing changes, and a
change seen on every worker within a second (through a version in Redis)."""

import time

import redis
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from console import aliases
from console.aliases import add_alias, delete_alias, for_workspace


def test_a_workspace_without_aliases_costs_no_query_after_the_first(transactional_db, acme):
    assert not async_to_sync(for_workspace)(acme.pk)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(100):
            assert not async_to_sync(for_workspace)(acme.pk)
    assert len(queries) == 0


def test_without_redis_a_change_is_seen_at_once(transactional_db, settings, acme, alice):
    settings.REDIS_URL = ""
    assert not async_to_sync(for_workspace)(acme.pk)
    alias = add_alias(workspace=acme, pattern="claude-*", target="mira", by=alice)
    assert async_to_sync(for_workspace)(acme.pk).match("claude-opus-4-1") == "mira"
    delete_alias(alias=alias, by=alice)
    assert not async_to_sync(for_workspace)(acme.pk)


def test_a_change_reaches_another_worker_within_a_second(
    transactional_db, redis_url, settings, acme, alice
):
    settings.REDIS_URL = redis_url
    assert not async_to_sync(for_workspace)(acme.pk)
    stale = aliases._local[acme.pk]
    add_alias(workspace=acme, pattern="claude-*", target="mira", by=alice)
    version = redis.Redis.from_url(redis_url, decode_responses=True).get(
        f"aliases:version:{acme.pk}"
    )
    assert version and version != stale[1]
    # Another worker still holds the copy it read before the change.
    aliases._local[acme.pk] = stale
    deadline = time.monotonic() + 1.0
    while not async_to_sync(for_workspace)(acme.pk):
        assert time.monotonic() < deadline, "the change was not seen within a second"
        time.sleep(0.05)


def test_a_change_is_announced_only_once_it_commits(
    transactional_db, redis_url, settings, acme, alice
):
    settings.REDIS_URL = redis_url
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    key = f"aliases:version:{acme.pk}"
    before = client.get(key)
    with transaction.atomic():
        add_alias(workspace=acme, pattern="gpt-*", target="mira", by=alice)
        assert client.get(key) == before  # not yet: the change may roll back
    assert client.get(key) != before
