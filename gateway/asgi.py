"""The /v1 API's own ASGI handler: Django's request and response, without the console's middleware.

API calls carry a key, not a session, so the session, CSRF, message and template
middleware of the console would only add work (and thread hops) to every call. This
handler runs one async step instead: request id, version, routing, method, errors.
"""

import asyncio
import logging
import os
import time
from contextlib import closing
from functools import lru_cache

from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, ResolverMatch, resolve, set_script_prefix

from gateway import versions
from gateway.errors import ApiError

logger = logging.getLogger(__name__)


def new_request_id() -> str:
    """`req_` + 12 hex digits of milliseconds + 20 random: unique, and in time order, so
    that the indexes on request ids grow at one end instead of at random places."""
    return f"req_{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


async def handle(request: HttpRequest) -> HttpResponseBase:
    request.request_id = new_request_id()
    request.started = time.monotonic()
    anthropic = request.path.startswith("/v1/messages") or request.path.startswith("/v1/messages/")
    extra_headers: dict[str, str] = {}
    try:
        version, path = versions.resolve(request.path)
        extra_headers = versions.deprecation_headers(version)
        request.api_version = version.name
        try:
            match = _resolve(path)
        except Resolver404:
            raise ApiError(
                404, f"No endpoint at {request.path}. See /v1/openapi.json.", code="not_found"
            ) from None
        anthropic = match.url_name in ("messages", "messages_count_tokens")
        response = await match.func(request, *match.args, **match.kwargs)
    except ApiError as exc:
        response = exc.response(anthropic=anthropic)
    except Exception:
        logger.exception(
            "unhandled error in %s %s (%s)", request.method, request.path, request.request_id
        )
        response = ApiError(500, "Internal server error.", code="internal_error").response(
            anthropic=anthropic
        )
    response["x-request-id"] = request.request_id
    for name, value in extra_headers.items():
        response[name] = value
    for name, value in getattr(request, "rate_limit_headers", {}).items():
        response.setdefault(name, value)
    return response


@lru_cache(maxsize=512)
def _resolve(path: str) -> ResolverMatch:
    return resolve(path, urlconf="gateway.urls")


def _close(response: HttpResponseBase) -> None:
    """`response.close()` without the request_finished signal: its receivers look after
    the request thread's database connections, and the API's database work runs on
    console.db's threads, which keep theirs."""
    for closer in response._resource_closers:
        try:
            closer()
        except Exception:
            logger.exception("closing a response")
    response._resource_closers.clear()
    response.closed = True


class _Processed(Exception):
    pass


class GatewayHandler(ASGIHandler):
    """Django's ASGI handler, minus what the API does not use.

    No middleware, no request_started/request_finished signals (their receivers look
    after the request thread's database connections, while the gateway's database work
    runs on `console.db`'s threads, which manage their own), and no log line with a
    hop to a thread for every 4xx answer: errors are the caller's, in its response.
    """

    async def __call__(self, scope, receive, send) -> None:
        # Django wraps each request in a ThreadSensitiveContext for the sync code its
        # middleware and views may run; the API runs none (its database work has
        # threads of its own, console.db).
        await self.handle(scope, receive, send)

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = handle

    async def handle(self, scope, receive, send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        with closing(body_file):
            set_script_prefix(get_script_prefix(scope))
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                await self.send_response(error_response, send)
                _close(error_response)
                return
            response = await handle(request)
            response._resource_closers.append(request.close)
            try:
                if response.streaming:
                    await self._relay(response, receive, send)
                else:
                    # Sent at once. A caller that left while the upstream was answering
                    # misses the answer, and the call is booked like any other.
                    await self.send_response(response, send)
            finally:
                _close(response)

    async def _relay(self, response: HttpResponseBase, receive, send) -> None:
        """Send a stream while listening for the caller leaving, which stops it."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.listen_for_disconnect(receive))
                await self.send_response(response, send)
                raise _Processed
        except* (_Processed, RequestAborted):
            pass
