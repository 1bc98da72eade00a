"""State shared by every worker: Redis when REDIS_URL is set, this process otherwise.

Rate-limit counters and the key cache sit on the hot path of every API call, so they
use redis-py's asyncio client directly (one per event loop) rather than Django's
cache, whose async methods hop to a thread.

Redis is a shared cache here, never the only copy of anything: when it cannot be
reached, `redis_client()` answers None for `RETRY_SECONDS` (so calls do not each wait
for a connection that fails), key lookups go to the database and rate limits are
counted in this process (per worker, so they still hold, only less tightly). The
next call after that tries Redis again, and sharing resumes without a restart.
"""

import asyncio
import logging
import time
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings

logger = logging.getLogger(__name__)

# Redis is on the call's path: a server that stops answering must not stall calls.
TIMEOUT_SECONDS = 0.5
RETRY_SECONDS = 1.0
ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)
_sync_clients: dict[str, redis.Redis] = {}
_down_until = 0.0
_down_since: float | None = None
_outages = 0


def redis_down() -> bool:
    """Whether Redis failed in the last `RETRY_SECONDS` (callers use their fallback)."""
    return _down_since is not None and time.monotonic() < _down_until


def redis_client() -> aioredis.Redis | None:
    """This event loop's Redis client; None when no REDIS_URL is configured or Redis
    failed in the last `RETRY_SECONDS`."""
    if not settings.REDIS_URL or redis_down():
        return None
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(
            settings.REDIS_URL,
            decode_responses=True,
            socket_connect_timeout=TIMEOUT_SECONDS,
            socket_timeout=TIMEOUT_SECONDS,
        )
        _clients[loop] = client
    return client


def sync_redis_client() -> redis.Redis | None:
    """A blocking client for code off the event loop (key changes); None as above."""
    if not settings.REDIS_URL or redis_down():
        return None
    client = _sync_clients.get(settings.REDIS_URL)
    if client is None:
        client = _sync_clients[settings.REDIS_URL] = redis.Redis.from_url(
            settings.REDIS_URL,
            decode_responses=True,
            socket_connect_timeout=TIMEOUT_SECONDS,
            socket_timeout=TIMEOUT_SECONDS,
        )
    return client


def redis_failed(exc: BaseException) -> None:
    """Note that Redis could not be reached: callers use their fallback for a while."""
    global _down_until, _down_since, _outages
    now = time.monotonic()
    if _down_since is None:
        _down_since = now
        _outages += 1
        logger.warning(
            "Redis cannot be reached (%s): key checks use the database and rate limits are "
            "counted per worker until it is back",
            exc,
        )
    _down_until = now + RETRY_SECONDS


def redis_answered() -> None:
    """Note that Redis answered (after an outage: say so once)."""
    global _down_since
    if _down_since is not None:
        logger.warning(
            "Redis is back after %.1f s: rate limits and the key cache are shared again",
            time.monotonic() - _down_since,
        )
        _down_since = None


def outages() -> int:
    """How many times this process has found Redis unreachable since it started."""
    return _outages


class MemoryCounters:
    """Fixed-window counters in this process, for a single-process console."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[int, float]] = {}

    def add(self, key: str, amount: int, ttl: float) -> int:
        now = time.monotonic()
        value, expires = self._values.get(key, (0, 0.0))
        if expires <= now:
            value, expires = 0, now + ttl
        value += amount
        self._values[key] = (value, expires)
        if len(self._values) > 50_000:
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
        return value

    def get(self, key: str) -> int:
        value, expires = self._values.get(key, (0, 0.0))
        return value if expires > time.monotonic() else 0


memory_counters = MemoryCounters()


async def counter_add(key: str, amount: int, ttl: int) -> int:
    """Add to a counter that lives `ttl` seconds from its first increment; returns the new value."""
    client = redis_client()
    if client is not None:
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.incrby(key, amount)
                pipe.expire(key, ttl, nx=True)
                value, _ = await pipe.execute()
        except ERRORS as exc:
            redis_failed(exc)
        else:
            redis_answered()
            return int(value)
    return memory_counters.add(key, amount, ttl)


def counter_add_task(key: str, amount: int, ttl: int) -> asyncio.Task | None:
    """`counter_add` that no cancellation can interrupt: done at once in this process
    (None), or in a task of its own with Redis (returned, for the caller to await)."""
    if redis_client() is None:
        memory_counters.add(key, amount, ttl)
        return None
    return asyncio.ensure_future(counter_add(key, amount, ttl))


async def counter_add_and_get(key: str, amount: int, ttl: int, other: str) -> tuple[int, int]:
    """`counter_add` on `key`, and the value of the counter `other`, in one round trip."""
    client = redis_client()
    if client is not None:
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.incrby(key, amount)
                pipe.expire(key, ttl, nx=True)
                pipe.get(other)
                value, _, other_value = await pipe.execute()
        except ERRORS as exc:
            redis_failed(exc)
        else:
            redis_answered()
            return int(value), int(other_value or 0)
    return memory_counters.add(key, amount, ttl), memory_counters.get(other)
