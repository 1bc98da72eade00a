"""Who this worker is, and the heartbeat that tells the others it is alive.

Every hold a worker takes (a call's, or a lease of credit) names it as the owner. A
worker beats (writes `Worker.seen_at`) every `BEAT_SECONDS` while it runs, and before
its first hold; one not seen for `GONE_SECONDS` is taken to be gone, and the holds it
owned are returned by any other worker (console.recovery). On one machine, a worker's
journal tells sooner: its lock is free as soon as the process is.
"""

import os
import re
import secrets
import socket
import time
from datetime import timedelta

from django.utils import timezone

BEAT_SECONDS = 5.0
GONE_SECONDS = 30.0

_id: tuple[int, str] = (-1, "")
_beaten = 0.0


def current() -> str:
    """This process's worker id: `<host>-<pid>-<random>`, new in every process (a forked
    child is a worker of its own)."""
    global _id, _beaten
    pid = os.getpid()
    if _id[0] != pid:
        host = re.sub(r"[^A-Za-z0-9.]", "", socket.gethostname())[:40] or "host"
        _id = (pid, f"{host}-{pid}-{secrets.token_hex(4)}")
        _beaten = 0.0
    return _id[1]


def beat(*, force: bool = False) -> None:
    """Say this worker is alive (database thread); a no-op when it said so recently."""
    global _beaten
    from console.models import Worker

    worker_id = current()
    now = time.monotonic()
    if not force and now - _beaten < BEAT_SECONDS:
        return
    seen = timezone.now()
    if not Worker.objects.filter(pk=worker_id).update(seen_at=seen):
        Worker.objects.update_or_create(
            pk=worker_id,
            defaults={"host": socket.gethostname()[:255], "pid": os.getpid(), "seen_at": seen},
        )
    _beaten = now


def gone_before():
    """Workers not seen since this moment are gone."""
    return timezone.now() - timedelta(seconds=GONE_SECONDS)


def leave() -> None:
    """This worker stops: it owns nothing any more (database thread)."""
    global _beaten
    from console.models import Worker

    Worker.objects.filter(pk=current()).delete()
    _beaten = 0.0
