"""Django's cache on Redis, kept in this process's memory while Redis cannot be reached.

Sign-in throttles and other cached state must not turn a Redis outage into server
errors: each operation falls back to a local memory cache (so a throttle still counts,
per worker) and goes back to Redis once it answers again (console.shared).
"""

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

from console.shared import ERRORS, redis_answered, redis_down, redis_failed


class ResilientRedisCache(RedisCache):
    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self.memory = LocMemCache("redis-fallback", {"TIMEOUT": params.get("TIMEOUT", 300)})


def _resilient(name: str):
    on_redis = getattr(RedisCache, name)

    def method(self, *args, **kwargs):
        if not redis_down():
            try:
                result = on_redis(self, *args, **kwargs)
            except ERRORS as exc:
                redis_failed(exc)
            else:
                redis_answered()
                return result
        return getattr(self.memory, name)(*args, **kwargs)

    method.__name__ = name
    return method


for _name in (
    "add", "get", "set", "touch", "delete", "get_many", "has_key", "incr", "set_many",
    "delete_many", "clear",
):  # fmt: skip
    setattr(ResilientRedisCache, _name, _resilient(_name))
