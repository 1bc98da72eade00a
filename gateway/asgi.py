"""The /v1 API's own ASGI handler: Django's request and response, without the console's middleware.

API calls carry a key, not a session, so the session, CSRF, message and template
middleware of the console would only add work (and thread hops) to every call. This
handler runs one async step instead: request id, version, routing, method, errors.
"""

import asyncio
import logging
import time
import uuid
from contextlib import closing

from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve, set_script_prefix

from gateway import versions
from gateway.errors import ApiError

logger = logging.getLogger(__name__)


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


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
            match = resolve(path, urlconf="gateway.urls")
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


class _Processed(Exception):
    pass


class GatewayHandler(ASGIHandler):
    """Django's ASGI handler, minus what the API does not use.

    No middleware, and no request_started/request_finished signals: their receivers
    (closing this thread's database connections) each cost a hop to a thread, while
    the gateway's database work runs on `console.db`'s threads, which manage their own.
    """

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
                error_response.close()
                return
            response = None
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self.listen_for_disconnect(receive))
                    response = await self.run_get_response(request)
                    await self.send_response(response, send)
                    raise _Processed
            except* (_Processed, RequestAborted):
                pass
            if response is not None:
                response.close()
