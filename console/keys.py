"""API key secrets: how they look, how they are checked and how they are looked up fast.

A secret is `sk-mira-` + 40 hex characters (160 random bits) + 6 hex characters of
checksum. The checksum lets a mistyped or made-up key be refused without a database
query; only the SHA-256 hash of the whole secret is stored.

Lookups go through two caches: a small one in this process, trusted for
`LOCAL_SECONDS` and then, up to `LOCAL_STALE_SECONDS`, still used while a fresh copy is
fetched in the background; then Redis when `REDIS_URL` is set (the database otherwise).
A revoked key stops working on every worker within `LOCAL_STALE_SECONDS` (less than a
second), without a database query on the path of a call:

- A change to a key forgets it once the change is committed (`forget_after_commit`),
  never before: a lookup in between would read the old row and share it again.
- A Redis entry is stamped with the key's generation (counted up by every change) and
  a global epoch, read in the same round trip as the entry. A lookup that read the key
  before a change but writes its entry after it writes an old stamp, which no reader
  believes; so it cannot bring a revoked key back.
- Redis may come back with entries written before a change it never heard of (it was
  unreachable, not restarted). A worker that found Redis unreachable counts the global
  epoch up when it reaches it again, which retires every entry written before; one
  whose change could not reach Redis keeps trying in the background until it can.
"""

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial

import redis
from django.conf import settings
from django.db import transaction

from console.shared import (
    ERRORS,
    RETRY_SECONDS,
    outages,
    redis_answered,
    redis_client,
    redis_failed,
    sync_redis_client,
)

logger = logging.getLogger(__name__)

PREFIX = "sk-mira-"
_RANDOM_HEX = 40
_CHECK_HEX = 6
LENGTH = len(PREFIX) + _RANDOM_HEX + _CHECK_HEX
_HEX = re.compile("[0-9a-f]+")
LOCAL_SECONDS = 0.4
LOCAL_STALE_SECONDS = 0.8
_fetching: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Task] = {}
SHARED_SECONDS = 300
# Outlives every entry stamped with it: a generation that expired (read as 0 again)
# cannot make an old entry believable.
GENERATION_SECONDS = 3600
EPOCH = "apikey:epoch"


def _checksum(random_part: str) -> str:
    return hashlib.sha256(f"mira-key:{random_part}".encode()).hexdigest()[:_CHECK_HEX]


def generate_secret() -> str:
    random_part = secrets.token_hex(_RANDOM_HEX // 2)
    return f"{PREFIX}{random_part}{_checksum(random_part)}"


def is_well_formed(secret: str) -> bool:
    """Whether a string could be a key this console issued (no database needed)."""
    if len(secret) != LENGTH or not secret.startswith(PREFIX):
        return False
    body = secret[len(PREFIX) :]
    if not _HEX.fullmatch(body):
        return False
    return hmac.compare_digest(_checksum(body[:_RANDOM_HEX]), body[_RANDOM_HEX:])


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:16]


@dataclass(frozen=True)
class KeyInfo:
    """What the gateway needs to know about a key on every call, cached."""

    id: str
    workspace_id: int
    workspace_slug: str
    user_id: int | None
    name: str
    scopes: tuple[str, ...]
    models: tuple[str, ...]
    rpm_limit: int | None
    tpm_limit: int | None
    monthly_budget: int | None
    expires_at: datetime | None
    active: bool

    def allows_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def allows_model(self, model: str) -> bool:
        return not self.models or model in self.models


_local: dict[str, tuple[KeyInfo | None, float]] = {}  # hash: (key, when it was fetched)
# hash: how many changes this process has seen, so that a fetch begun before one is not kept
_changes: dict[str, int] = {}
_epoch_paid = 0  # the outages of Redis (console.shared.outages) the epoch was counted up for


def _shared_key(key_hash: str) -> str:
    return f"apikey:{key_hash}"


def _generation_key(key_hash: str) -> str:
    return f"apikey:gen:{key_hash}"


def forget_after_commit(key_hash: str) -> None:
    """Drop a key from the caches once the current transaction commits (at once outside
    one); called on every change to a key."""
    _local.pop(key_hash, None)
    transaction.on_commit(partial(forget, key_hash), robust=True)


def forget(key_hash: str) -> None:
    """Drop a key from this process's cache and retire its shared entry."""
    _changes[key_hash] = _changes.get(key_hash, 0) + 1
    _local.pop(key_hash, None)
    if not settings.REDIS_URL:
        return
    client = sync_redis_client()  # None: Redis failed a moment ago
    if client is not None:
        try:
            _retire(client, key_hash)
        except ERRORS as exc:
            redis_failed(exc)
        else:
            redis_answered()
            return
    threading.Thread(target=_retire_later, args=(key_hash,), daemon=True).start()


def _retire(client, key_hash: str) -> None:
    global _epoch_paid
    outages_now = outages()
    with client.pipeline(transaction=True) as pipe:
        if outages_now != _epoch_paid:
            pipe.incr(EPOCH)
        pipe.incr(_generation_key(key_hash))
        pipe.expire(_generation_key(key_hash), GENERATION_SECONDS)
        pipe.delete(_shared_key(key_hash))
        pipe.execute()
    _epoch_paid = outages_now


def _retire_later(key_hash: str) -> None:
    """Retire a key's shared entry once Redis answers (a change it could not hear of)."""
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=RETRY_SECONDS, socket_timeout=RETRY_SECONDS
    )
    while True:
        time.sleep(RETRY_SECONDS / 4)
        try:
            _retire(client, key_hash)
        except ERRORS:
            continue
        client.close()
        redis_answered()
        return


def _encode(info: KeyInfo | None) -> str:
    if info is None:
        return "null"
    data = asdict(info)
    data["expires_at"] = info.expires_at.isoformat() if info.expires_at else None
    return json.dumps(data)


def _decode(raw: str) -> KeyInfo | None:
    data = json.loads(raw)
    if data is None:
        return None
    data["expires_at"] = datetime.fromisoformat(data["expires_at"]) if data["expires_at"] else None
    data["scopes"] = tuple(data["scopes"])
    data["models"] = tuple(data["models"])
    return KeyInfo(**data)


async def lookup(secret: str) -> KeyInfo | None:
    """The key for a secret, or None when it is unknown or could not be one (which costs
    no query). Status is checked by the caller."""
    key_hash = hash_secret(secret)
    cached = _local.get(key_hash)
    if cached is None:
        if not is_well_formed(secret):
            return None
        return await asyncio.shield(_fetch(key_hash))
    info, fetched = cached  # only well-formed secrets are cached: no need to check again
    age = time.monotonic() - fetched
    if age < LOCAL_SECONDS:
        return info
    if age < LOCAL_STALE_SECONDS:
        _fetch(key_hash)  # answered from here while a fresh copy is fetched off the call's path
        return info
    return await asyncio.shield(_fetch(key_hash))


def _fetch(key_hash: str) -> asyncio.Task:
    """The lookup of a fresh copy of a key: one at a time per key, shared by the calls
    (and the background refresh) that need it."""
    loop = asyncio.get_running_loop()
    pending = (loop, key_hash)
    task = _fetching.get(pending)
    if task is None:
        task = _fetching[pending] = loop.create_task(_fetch_now(key_hash))
        task.add_done_callback(lambda done: _fetched(pending, done))
    return task


def _fetched(pending: tuple[asyncio.AbstractEventLoop, str], task: asyncio.Task) -> None:
    _fetching.pop(pending, None)
    if not task.cancelled() and task.exception() is not None:
        logger.error("could not look up an API key", exc_info=task.exception())


async def _fetch_now(key_hash: str) -> KeyInfo | None:
    started = time.monotonic()
    changes = _changes.get(key_hash, 0)
    client = redis_client()
    stamp, info = await _shared(client, key_hash) if client else (None, _MISSING)
    if info is _MISSING:
        from console import db
        from console.models import ApiKey

        info = await db.run(ApiKey.objects.info_for_hash, key_hash)
        if stamp is not None:
            await _share(client, key_hash, stamp, info)
    if _changes.get(key_hash, 0) == changes:  # else: changed while fetched, maybe too late
        if len(_local) > 10_000:
            _local.clear()
        _local[key_hash] = (info, started)
    return info


_MISSING = object()


async def _shared(client, key_hash: str) -> tuple[str | None, KeyInfo | None | object]:
    """(the stamp an entry written now must carry, the shared entry or _MISSING); no stamp
    when Redis cannot be reached."""
    global _epoch_paid
    try:
        outages_now = outages()
        if outages_now != _epoch_paid:
            await client.incr(EPOCH)  # entries from before the outage may be stale
            _epoch_paid = outages_now
        raw, generation, epoch = await client.mget(
            _shared_key(key_hash), _generation_key(key_hash), EPOCH
        )
    except ERRORS as exc:
        redis_failed(exc)
        return None, _MISSING
    redis_answered()
    stamp = f"{generation or 0}.{epoch or 0}"
    if raw is not None:
        written, _, data = raw.partition(" ")
        if written == stamp:
            return stamp, _decode(data)
    return stamp, _MISSING


async def _share(client, key_hash: str, stamp: str, info: KeyInfo | None) -> None:
    """Share a key read from the database, stamped with what was current before the read."""
    try:
        await client.set(_shared_key(key_hash), f"{stamp} {_encode(info)}", ex=SHARED_SECONDS)
    except ERRORS as exc:
        redis_failed(exc)
