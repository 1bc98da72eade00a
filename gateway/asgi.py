"""The /v1 API's own ASGI handler: Django's request and response, without the console's middleware.

API calls carry a key, not a session, so the session, CSRF, message and template
middleware of the console would only add work (and thread hops) to every call. This
handler runs one async step instead: request id, version, routing, method, errors.
"""

import asyncio
import io
import logging
import os
import tempfile
import time
from contextlib import aclosing, closing
from functools import lru_cache
from typing import BinaryIO

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestAborted, RequestDataTooBig
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, ResolverMatch, resolve, set_script_prefix

from gateway import metrics, versions
from gateway.errors import ApiError, too_large

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
    for name, value in extra_headers.items():
        response[name] = value
    if response.status_code >= 400 and not getattr(request, "metered", False):
        metrics.refused(response.status_code)
    return response


def _headers(request: HttpRequest, response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    """The response's headers for ASGI, with the request id and the rate limits added
    here, as bytes, rather than through the response's case-insensitive header map."""
    headers = [(name.encode("ascii"), value.encode("latin-1")) for name, value in response.items()]
    headers.append((b"x-request-id", request.request_id.encode()))
    limits = getattr(request, "rate_limit_headers", None)
    if limits:
        own = {name.lower() for name in response.headers}
        for name, value in limits.items():
            if name not in own:  # a 429 carries its own
                headers.append((name.encode(), value.encode()))
    for cookie in response.cookies.values():
        headers.append((b"Set-Cookie", cookie.OutputString().encode("ascii")))
    return headers


@lru_cache(maxsize=512)
def _resolve(path: str) -> ResolverMatch:
    return resolve(path, urlconf="gateway.urls")


# The paths (after the version) whose JSON carries files, as base64: they may be larger.
MEDIA_PATHS = ("upload", "image", "vision/", "video")


def _body_limits(scope: dict) -> tuple[int, int]:
    """The most a request's body may hold (uploads may hold more than JSON) and the length
    its Content-Length announces (0 without one)."""
    limit, length = settings.GATEWAY_MAX_JSON_BYTES, 0
    if scope["path"].split("/", 2)[-1].startswith(MEDIA_PATHS):
        limit = settings.GATEWAY_MAX_MEDIA_JSON_BYTES
    for name, value in scope["headers"]:
        if name == b"content-type":
            if value[:19].lower() == b"multipart/form-data":
                limit = settings.GATEWAY_MAX_UPLOAD_BYTES
        elif name == b"content-length" and value.isdigit():
            length = int(value)
    return limit, length


async def _refuse(scope: dict, send, error: ApiError) -> None:
    """Answer with an error before the body is read. The server discards what the client
    still sends of it (a connection closed with unread data would be reset, and the client
    could lose this answer)."""
    anthropic = scope["path"].split("/")[2:3] == ["messages"]
    response = error.response(anthropic=anthropic)
    metrics.refused(response.status_code)
    headers = [(name.encode("ascii"), value.encode("latin-1")) for name, value in response.items()]
    headers += [
        (b"content-length", str(len(response.content)).encode()),
        (b"x-request-id", new_request_id().encode()),
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})


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

    async def read_body(self, receive, limit: int | None = None) -> BinaryIO:
        """The body in memory when it came in one message (an API call's JSON); Django's
        spooled file, which moves to disk when large, when it comes in several. Reading
        stops with RequestDataTooBig as soon as the body is longer than `limit`."""
        if limit is None:
            limit = settings.GATEWAY_MAX_UPLOAD_BYTES
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted()
        chunk = message.get("body", b"")
        if len(chunk) > limit:
            raise RequestDataTooBig()
        if not message.get("more_body", False):
            return io.BytesIO(chunk)
        body_file = tempfile.SpooledTemporaryFile(
            max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b"
        )
        try:
            received = 0
            while True:
                received += len(chunk)
                if received > limit:
                    raise RequestDataTooBig()
                if getattr(body_file, "_rolled", False):  # on disk: write off the loop
                    await sync_to_async(body_file.write, thread_sensitive=False)(chunk)
                else:
                    body_file.write(chunk)
                if not message.get("more_body", False):
                    break
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise RequestAborted()
                chunk = message.get("body", b"")
        except BaseException:
            body_file.close()
            raise
        body_file.seek(0)
        return body_file

    async def handle(self, scope, receive, send) -> None:
        limit, length = _body_limits(scope)
        try:
            # Refused before it is read (and before the key is looked at) when its
            # Content-Length says it is too large; cut off as soon as it is when it comes
            # without one, in chunks.
            if length > limit:
                raise RequestDataTooBig()
            body_file = await self.read_body(receive, limit)
        except RequestAborted:
            return
        except RequestDataTooBig:
            await _refuse(scope, send, too_large(limit))
            return
        with closing(body_file):
            prefix = get_script_prefix(scope)
            if prefix:  # served under a path prefix (otherwise "/", the default, holds)
                set_script_prefix(prefix)
            request, error_response = self.create_request(scope, body_file)
            if request is None:
                await self.send_response(error_response, send)
                _close(error_response)
                return
            response = await handle(request)
            response._resource_closers.append(request.close)
            try:
                start = {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _headers(request, response),
                }
                if response.streaming:
                    await self._relay(response, start, receive, send)
                else:
                    # Sent at once. A caller that left while the upstream was answering
                    # misses the answer, and the call is booked like any other.
                    await send(start)
                    await send({"type": "http.response.body", "body": response.content})
            finally:
                _close(response)

    async def _relay(self, response: HttpResponseBase, start: dict, receive, send) -> None:
        """Send a stream, and stop it if the caller leaves.

        A task waits for the caller's disconnect and cancels this one. (Not a TaskGroup:
        the exception that ends one would leave a reference cycle behind every stream,
        for the garbage collector to find.)
        """
        streaming = asyncio.current_task()
        assert streaming is not None
        state = {"sending": True, "left": False}

        async def watch() -> None:
            message = await receive()
            if message["type"] == "http.disconnect" and state["sending"]:
                state["left"] = True
                streaming.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await send(start)
            async with aclosing(aiter(response)) as parts:
                async for part in parts:
                    await send({"type": "http.response.body", "body": part, "more_body": True})
            state["sending"] = False
            await send({"type": "http.response.body"})
        except asyncio.CancelledError:
            if not state["left"]:
                raise
            streaming.uncancel()  # the caller left: the stream is over, not this worker
        finally:
            state["sending"] = False
            watcher.cancel()
