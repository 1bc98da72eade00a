"""API key secrets: how they look, how they are checked and how they are looked up fast.

A secret is `sk-mira-` + 40 hex characters (160 random bits) + 6 hex characters of
checksum. The checksum lets a mistyped or made-up key be refused without a database
query; only the SHA-256 hash of the whole secret is stored.

Lookups go through two caches: a small one in this process, trusted for
`LOCAL_SECONDS` and then, up to `LOCAL_STALE_SECONDS`, still used while a fresh copy is
fetched in the background; then Redis when `REDIS_URL` is set (the database otherwise).
Every change to a key deletes its Redis entry, so a revoked key stops working on every
worker within `LOCAL_STALE_SECONDS` (less than a second), without a database query on
the path of a call.
"""

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import datetime

import redis
from django.conf import settings

from console.shared import redis_client

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
_sync_redis: dict[str, redis.Redis] = {}


def _shared_key(key_hash: str) -> str:
    return f"apikey:{key_hash}"


def forget(key_hash: str) -> None:
    """Drop a key from both caches; called on every change to the key."""
    _local.pop(key_hash, None)
    if settings.REDIS_URL:
        client = _sync_redis.get(settings.REDIS_URL)
        if client is None:
            client = _sync_redis[settings.REDIS_URL] = redis.Redis.from_url(settings.REDIS_URL)
        client.delete(_shared_key(key_hash))


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
    client = redis_client()
    raw = await client.get(_shared_key(key_hash)) if client else None
    if raw is not None:
        info = _decode(raw)
    else:
        from console import db
        from console.models import ApiKey

        info = await db.run(ApiKey.objects.info_for_hash, key_hash)
        if client:
            await client.set(_shared_key(key_hash), _encode(info), ex=SHARED_SECONDS)
    if len(_local) > 10_000:
        _local.clear()
    _local[key_hash] = (info, started)
    return info
