"""State shared by every worker: Redis when REDIS_URL is set, this process otherwise.

Rate-limit counters and the key cache sit on the hot path of every API call, so they
use redis-py's asyncio client directly (one per event loop) rather than Django's
cache, whose async methods hop to a thread.
"""

import asyncio
import time
import weakref

import redis.asyncio as aioredis
from django.conf import settings

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)


def redis_client() -> aioredis.Redis | None:
    """This event loop's Redis client, or None when no REDIS_URL is configured."""
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
        _clients[loop] = client
    return client


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
    if client is None:
        return memory_counters.add(key, amount, ttl)
    async with client.pipeline(transaction=True) as pipe:
        pipe.incrby(key, amount)
        pipe.expire(key, ttl, nx=True)
        value, _ = await pipe.execute()
    return int(value)


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
    if client is None:
        return memory_counters.add(key, amount, ttl), memory_counters.get(other)
    async with client.pipeline(transaction=True) as pipe:
        pipe.incrby(key, amount)
        pipe.expire(key, ttl, nx=True)
        pipe.get(other)
        value, _, other_value = await pipe.execute()
    return int(value), int(other_value or 0)
