"""The shared key cache cannot be turned stale: a change forgets the key after it commits,
and an entry written by a lookup that read the key before a change is not believed."""

import redis
from asgiref.sync import async_to_sync
from django.db import transaction

from console import keys
from console.actions import create_key
from console.models import ApiKey
from console.shared import redis_client


def test_a_lookup_that_read_a_key_before_it_was_revoked_cannot_share_it_afterwards(
    transactional_db, redis_url, settings, alice, acme
):
    settings.REDIS_URL = redis_url
    key, secret = create_key(workspace=acme, name="raced", created_by=alice)
    key_hash = keys.hash_secret(secret)

    # A lookup on another worker begins: nothing is shared yet, so it reads the database...
    async def begin():
        return await keys._shared(redis_client(), key_hash)

    async def end(read):
        await keys._share(redis_client(), key_hash, stamp, read)

    stamp, shared = async_to_sync(begin)()
    assert shared is keys._MISSING
    read = ApiKey.objects.get(pk=key.pk).info()
    assert read.active
    # ...the key is revoked meanwhile, and only then does that lookup share what it read.
    key.revoke()
    async_to_sync(end)(read)
    stale = redis.Redis.from_url(redis_url, decode_responses=True).get(f"apikey:{key_hash}")
    assert '"active": true' in stale

    keys._local.clear()  # as on a worker that has no copy of its own
    assert async_to_sync(keys.lookup)(secret).active is False


def test_a_change_inside_a_transaction_is_forgotten_only_once_it_commits(
    transactional_db, redis_url, settings, alice, acme
):
    settings.REDIS_URL = redis_url
    key, secret = create_key(workspace=acme, name="kept", created_by=alice)
    key_hash = keys.hash_secret(secret)
    generation = f"apikey:gen:{key_hash}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    before = int(client.get(generation) or 0)
    with transaction.atomic():
        key.disable()
        assert int(client.get(generation) or 0) == before  # not yet: the change may roll back
    assert int(client.get(generation) or 0) == before + 1
    assert async_to_sync(keys.lookup)(secret).active is False
