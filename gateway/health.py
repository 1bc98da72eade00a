"""`/healthz`, `/readyz` and `/metrics`: for load balancers, orchestrators and Prometheus.

Served straight from the ASGI application (config.asgi), before Django's middleware: a
probe comes from an address and with a Host the console may not otherwise accept, over
plain HTTP, and must not be redirected, counted as usage or rate limited.

- `GET /healthz`: 200 while the process answers.
- `GET /readyz`: 200 when the database answers, Redis answers (when REDIS_URL is set)
  and at least one upstream node is healthy; otherwise 503, naming what fails.
- `GET /metrics`: Prometheus's text format (gateway.metrics). With METRICS_TOKEN set it
  needs `Authorization: Bearer <METRICS_TOKEN>`; without, only loopback may read it.

Neither answer carries a secret or an error's text (which could name a host or a
user): what fails is named, and the reason is logged.
"""

import asyncio
import hmac
import json
import logging
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import DatabaseError, connection

from console.shared import ERRORS as REDIS_ERRORS
from console.shared import redis_client, redis_down, redis_failed
from gateway import metrics
from upstream.fleet import get_fleet

logger = logging.getLogger(__name__)

PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
CHECK_SECONDS = 2.0  # a check that takes longer than this fails
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

# The checks' database work and the scrapes run on a thread of their own, with a
# connection of its own: they never wait behind the calls' bookings, nor delay them.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-health")


def executor() -> ThreadPoolExecutor:
    return _executor


async def app(scope, receive, send) -> None:
    path = scope["path"]
    if scope["method"] != "GET":
        await _send(send, 405, {"detail": f"{path} answers GET only."}, [(b"allow", b"GET")])
        return
    if path == "/healthz":
        await _send(send, 200, {"status": "ok"})
    elif path == "/readyz":
        status, body = await ready()
        await _send(send, status, body)
    else:
        await _metrics(scope, send)


async def ready() -> tuple[int, dict]:
    """(200 or 503, each check's outcome and, when one fails, a detail naming it)."""
    database, redis, fleet = await asyncio.gather(_database(), _redis(), _fleet())
    checks = {"database": database, "redis": redis, "fleet": fleet}
    failing = [name for name, outcome in checks.items() if outcome not in ("ok", "not configured")]
    if not failing:
        return 200, {"status": "ok", "checks": checks}
    detail = "Not ready: " + "; ".join(f"{name} {checks[name]}" for name in failing) + "."
    return 503, {"status": "failing", "failing": failing, "checks": checks, "detail": detail}


def _ping() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        connection.close()  # connect afresh next time
        raise


async def _database() -> str:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            await loop.run_in_executor(_executor, _ping)
    except TimeoutError:
        logger.warning("readiness: the database did not answer in %.0f s", CHECK_SECONDS)
        return "did not answer"
    except DatabaseError as exc:
        logger.warning("readiness: the database cannot be reached: %s", exc)
        return "unreachable"
    return "ok"


async def _redis() -> str:
    if not settings.REDIS_URL:
        return "not configured"
    client = redis_client()
    if client is None or redis_down():
        return "unreachable"
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            await client.ping()
    except (TimeoutError, *REDIS_ERRORS) as exc:
        redis_failed(exc)
        return "unreachable"
    return "ok"


async def _fleet() -> str:
    nodes = get_fleet().nodes
    healthy = sum(1 for node in nodes if node.healthy)
    if healthy:
        return "ok"
    return f"has no healthy upstream node ({len(nodes)} ejected)"


def _authorized(scope) -> tuple[int, str] | None:
    """None when the scrape may read the metrics; (status, why) otherwise."""
    token = settings.METRICS_TOKEN
    if not token:
        client = scope.get("client") or ("", 0)
        if client[0] in LOOPBACK:
            return None
        return 403, "Set METRICS_TOKEN to read /metrics from another host."
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                return None
            return 403, "The metrics token is not correct."
    return 401, "Send the metrics token: 'Authorization: Bearer <METRICS_TOKEN>'."


async def _metrics(scope, send) -> None:
    refused = _authorized(scope)
    if refused is not None:
        status, detail = refused
        extra = [(b"www-authenticate", b'Bearer realm="metrics"')] if status == 401 else []
        await _send(send, status, {"detail": detail}, extra)
        return
    loop = asyncio.get_running_loop()
    body = await loop.run_in_executor(_executor, metrics.render)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", metrics.CONTENT_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send(send, status: int, body: dict, headers: list | None = None) -> None:
    content = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
