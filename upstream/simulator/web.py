"""Just enough HTTP for the simulator: requests, responses, errors, routes, forms."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl


class ApiError(Exception):
    """Answer with `status` and `{"detail": detail}`."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Upload] = field(default_factory=dict)


@dataclass
class Request:
    scope: dict[str, Any]
    body: bytes
    headers: dict[str, str]
    path_params: dict[str, str] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.scope["method"]

    @property
    def path(self) -> str:
        return self.scope["path"]

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def origin(self) -> str:
        """`scheme://host[:port]` as the caller reached us, for absolute URLs."""
        scheme = self.scope.get("scheme", "http")
        host = self.headers.get("host")
        if not host:
            server = self.scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        return f"{scheme}://{host}"

    def json(self) -> dict[str, Any]:
        if not self.body:
            raise ApiError(400, "Request body must be a JSON object.")
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "Request body is not valid JSON.") from None
        if not isinstance(value, dict):
            raise ApiError(400, "Request body must be a JSON object.")
        return value

    def form(self) -> Form:
        if self.content_type != "multipart/form-data":
            raise ApiError(400, "Expected a multipart/form-data body.")
        return parse_multipart(self.headers["content-type"], self.body)


def parse_multipart(content_type: str, body: bytes) -> Form:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ApiError(400, "The multipart body could not be read.")
    form = Form()
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            form.files[name] = Upload(filename, part.get_content_type(), payload)
        else:
            charset = part.get_content_charset() or "utf-8"
            form.fields[name] = payload.decode(charset, "replace")
    return form


_DATA_URI = re.compile(
    r"data:(?P<type>[\w.+/-]+)?(?P<params>(?:;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,"
)


def decode_data_uri(value: str, field_name: str) -> tuple[str, bytes]:
    """The media type and bytes of a `data:` URI; 400 naming the field otherwise."""
    match = _DATA_URI.match(value)
    if not match:
        raise ApiError(400, f"'{field_name}' must be a data: URI or an http(s) URL.")
    payload = value[match.end() :]
    try:
        if match.group("b64"):
            data = base64.b64decode(payload, validate=False)
        else:
            data = payload.encode()
    except (binascii.Error, ValueError):
        raise ApiError(400, f"'{field_name}' holds invalid base64 data.") from None
    return (match.group("type") or "text/plain"), data


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status, "application/json", headers or {})


@dataclass
class StreamingResponse:
    """A body sent piece by piece; each piece is one SSE event for event streams."""

    pieces: AsyncIterator[bytes]
    status: int = 200
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Any, Request], Awaitable[Response | StreamingResponse]]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    name: str
    auth: str = "required"


class Router:
    """Routes with `{name}` placeholders; 404 for an unknown path, 405 for a wrong method."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: Handler, *, auth: str = "required") -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
        self.routes.append(Route(method, re.compile(f"^{regex}$"), handler, path, auth))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed = []
        for route in self.routes:
            found = route.pattern.match(path)
            if not found:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, found.groupdict()
            allowed.append(route.method)
        if allowed:
            raise ApiError(
                405,
                f"Method {method} is not allowed on {path}.",
                {"Allow": ", ".join(sorted(set(allowed)))},
            )
        if not re.match(r"^/v[0-9]+(/|$)", path):
            raise ApiError(
                404,
                "Requests without a version in the URL are not supported; "
                f"use /v1{path if path.startswith('/') else '/' + path}.",
            )
        raise ApiError(404, f"Endpoint not found: {method} {path}")
