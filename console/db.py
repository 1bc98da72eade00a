"""Database work on the hot path of model calls, on a few long-lived threads.

Django runs an async request's synchronous code on a thread of its own, so each API
call would open (and close) a database connection. The gateway's holds and bookings
run here instead: on `DB_THREADS` threads that keep their connections, which also
serialises SQLite's writers instead of leaving them to fight over its lock.
"""

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from django.conf import settings
from django.db import DatabaseError, connections

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _threads() -> int:
    if settings.GATEWAY_DB_THREADS:
        return settings.GATEWAY_DB_THREADS
    engine = settings.DATABASES["default"]["ENGINE"]
    return 1 if engine.endswith("sqlite3") else 4


def _get_executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="console-db")
        return _executor


def _call(fn: Callable, args: tuple, kwargs: dict):
    try:
        return fn(*args, **kwargs)
    except DatabaseError:
        # A broken connection is replaced on the next call rather than reused.
        for connection in connections.all(initialized_only=True):
            connection.close_if_unusable_or_obsolete()
        raise


def submit(fn: Callable, *args, **kwargs) -> Future:
    """Run `fn(*args, **kwargs)` on a database thread; its future (from any thread)."""
    return _get_executor().submit(_call, fn, args, kwargs)


async def run[T](fn: Callable[..., T], *args, **kwargs) -> T:
    """Run `fn(*args, **kwargs)` on a database thread and wait for it."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_get_executor(), partial(_call, fn, args, kwargs))


def close_all() -> None:
    """Close the threads' connections and stop the threads (tests, before dropping a database)."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is None:
        return
    workers = executor._max_workers
    barrier = threading.Barrier(workers)

    def close() -> None:
        connections.close_all()
        barrier.wait(timeout=10)

    for _ in range(workers):
        executor.submit(close)
    executor.shutdown(wait=True)
