"""POST /v1/fetch: a web page, read for a model (the console's own work: no upstream node).

`{"url", "format": "markdown" | "html" | "text", "max_length", "start_index"}` answers the
page's title, final URL, content type and its main content (navigation and other
boilerplate dropped, links kept) as trafilatura extracts it, a slice of `max_length`
characters from `start_index` with where the next slice starts. Each call is charged the
fetch price of one page, and needs a key's `fetch` scope.

The fetch cannot be turned inward (gateway.webguard has the rules): every address a name
resolves to must be public and none may be one of the console's own services; the
connection goes to the address that was checked (aiohttp asks `_Pinned`, which knows only
that address, so no second lookup can swap it), with the name kept for Host and TLS; each
redirect is checked again, at most FETCH_MAX_REDIRECTS; no proxy from the environment, no
cookies, no credentials; connecting, the whole fetch and the decoded body are capped, and
only text is read.
"""

import asyncio
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from typing import Literal

import aiohttp
import trafilatura
from aiohttp.abc import AbstractResolver, ResolveResult
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.request import split_domain_port
from pydantic import BaseModel, ConfigDict, Field
from trafilatura.utils import decode_file
from yarl import URL

from gateway import pipeline
from gateway.errors import ApiError
from gateway.http import Operation, endpoint, json_body, validate
from gateway.webguard import (
    Allowed,
    IPAddress,
    Protected,
    Refused,
    Target,
    check_name,
    choose_address,
    read_url,
)
from upstream.fleet import get_fleet

PATH = "/v1/fetch"
USER_AGENT = "MiraConsole-Fetch/1.0"
_REDIRECTS = (301, 302, 303, 307, 308)
_TEXT_TYPES = re.compile(r"(text/[a-z0-9.+-]+|application/([a-z0-9.-]+\+)?(xml|json))\Z")
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_CHUNK = 64 * 1024


class FetchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(min_length=1, max_length=8192, description="An http or https URL.")
    format: Literal["markdown", "html", "text"] = "markdown"
    max_length: int = Field(
        default=20_000, ge=1, le=1_000_000, description="The most characters to answer."
    )
    start_index: int = Field(
        default=0, ge=0, description="Where to start in the content (from a previous `next_index`)."
    )


@dataclass
class Page:
    url: str  # the final URL, after redirects
    status: int
    content_type: str  # the media type, without parameters
    charset: str | None
    body: bytes


async def resolve_name(host: str, port: int) -> list[IPAddress]:
    """Every address (A and AAAA) of a name, from the system's resolver. Tests replace this."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in seen:
            seen.append(address)
    return seen


class _Pinned(AbstractResolver):
    """Answers aiohttp with the one address that was checked, for the one host checked."""

    def __init__(self, host: str, address: IPAddress, port: int) -> None:
        self.host, self.address, self.port = host, address, port

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.lower() != self.host or port != self.port:
            raise OSError(f"{host} was not checked")
        return [
            ResolveResult(
                hostname=host, host=str(self.address), port=port,
                family=socket.AF_INET6 if self.address.version == 6 else socket.AF_INET,
                proto=0, flags=socket.AI_NUMERICHOST,
            )
        ]  # fmt: skip

    async def close(self) -> None:
        pass


# ---------- what is never fetched ----------

_protected_addresses: dict[str, tuple[float, list[IPAddress]]] = {}


async def _addresses_of(host: str, port: int) -> list[IPAddress]:
    """A service's addresses (literal, or looked up and kept for a minute); none when unknown."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    kept = _protected_addresses.get(host)
    if kept and kept[0] > time.monotonic():
        return kept[1]
    try:
        found = await resolve_name(host, port)
    except OSError:
        found = []
    _protected_addresses[host] = (time.monotonic() + 60, found)
    return found


def _host_port(url: str, default_port: int) -> tuple[str, int] | None:
    try:
        parsed = URL(url)
    except ValueError:
        return None
    if not parsed.raw_host:
        return None
    return parsed.raw_host.lower(), parsed.port or default_port


async def protected_services(request: HttpRequest | None) -> Protected:
    """The console's own hosts and address, its upstream nodes, its database and Redis."""
    services: list[tuple[str, int, str]] = []
    names: dict[str, str] = {}
    for name in settings.ALLOWED_HOSTS:
        if name != "*":
            names[name.lower().strip("[]")] = "this console's own host"
    if request is not None:
        domain, _port = split_domain_port(request.META.get("HTTP_HOST", ""))
        if domain:
            names[domain.strip("[]")] = "this console's own host"
        server, port = request.META.get("SERVER_NAME"), request.META.get("SERVER_PORT")
        if server and port and str(port).isdigit():
            services.append((server, int(port), "this console"))
    for node in get_fleet().nodes:
        found = _host_port(node.config.base_url, 443)
        if found:
            services.append((*found, "an upstream node"))
    for database in settings.DATABASES.values():
        if database.get("HOST"):
            services.append((database["HOST"], int(database.get("PORT") or 5432), "the database"))
    if settings.REDIS_URL:
        found = _host_port(settings.REDIS_URL, 6379)
        if found:
            services.append((*found, "the cache"))
    endpoints: dict[tuple[IPAddress, int], str] = {}
    for host, port, what in services:
        host = host.lower().strip("[]")
        if what != "this console":
            names.setdefault(host, what)
        for address in await _addresses_of(host, port):
            endpoints[(address, port)] = what
    return Protected(names=names, endpoints=endpoints)


# ---------- fetching ----------


async def check(url: str, protected: Protected) -> tuple[Target, IPAddress]:
    """The URL's target and the one address to connect to; Refused by any rule."""
    target = read_url(url, settings.FETCH_PORTS)
    check_name(target, protected)
    if target.literal is not None:
        addresses = [target.literal]
    else:
        try:
            async with asyncio.timeout(settings.FETCH_CONNECT_SECONDS):
                addresses = await resolve_name(target.host, target.port)
        except (OSError, UnicodeError, TimeoutError):
            raise Refused(
                400, f"The host '{target.host}' could not be found.", "host_not_found"
            ) from None
    address = choose_address(
        target, addresses, allowed=Allowed.parse(settings.FETCH_ALLOW), protected=protected
    )
    return target, address


async def fetch_page(target: Target, address: IPAddress, protected: Protected) -> Page:
    """Fetch a checked target, following redirects (each one checked) within the caps."""
    async with asyncio.timeout(settings.FETCH_TIMEOUT_SECONDS):
        for hops in range(settings.FETCH_MAX_REDIRECTS + 1):
            answer = await _get(target, address)
            if isinstance(answer, Page):
                return answer
            if hops == settings.FETCH_MAX_REDIRECTS:
                break
            target, address = await check(str(answer), protected)
    raise Refused(
        400,
        f"The page redirected more than {settings.FETCH_MAX_REDIRECTS} times.",
        "too_many_redirects",
    )


async def _get(target: Target, address: IPAddress) -> Page | URL:
    """One request to the checked address: the page, or where it redirects to."""
    connector = aiohttp.TCPConnector(
        resolver=_Pinned(target.host, address, target.port),
        use_dns_cache=False, limit=1, force_close=True,
    )  # fmt: skip
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.FETCH_CONNECT_SECONDS,
        sock_connect=settings.FETCH_CONNECT_SECONDS,
    )
    async with (
        aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5",
                "Accept-Encoding": "gzip, deflate",
            },
        ) as session,
        session.get(target.url, allow_redirects=False) as response,
    ):
        if response.status in _REDIRECTS and "Location" in response.headers:
            try:
                return target.url.join(URL(response.headers["Location"]))
            except ValueError:
                raise Refused(
                    400, "The page redirected to an invalid URL.", "invalid_redirect"
                ) from None
        if response.status >= 400:
            raise ApiError(502, f"The page answered HTTP {response.status}.", code="page_error")
        mime = response.content_type.lower()
        if not _TEXT_TYPES.match(mime):
            raise Refused(
                400,
                f"The page is {mime or 'of no stated type'}; only text (HTML, plain text, "
                "Markdown, XML, JSON) is fetched.",
                "content_type_not_allowed",
            )
        cap = settings.FETCH_MAX_BYTES
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > cap:
                raise Refused(
                    400,
                    f"The page is larger than {cap / (1024 * 1024):g} MiB once decoded "
                    "(FETCH_MAX_BYTES); it was not read further.",
                    "page_too_large",
                )
        return Page(
            url=str(target.url), status=response.status, content_type=mime,
            charset=response.charset, body=bytes(body),
        )  # fmt: skip


# ---------- reading ----------


def convert(page: Page, fmt: str) -> tuple[str, str]:
    """(title, content): an HTML page's main content in `fmt`, any other text as it is."""
    text = _decode(page)
    if page.content_type not in _HTML_TYPES:
        return "", text
    metadata = trafilatura.extract_metadata(text, default_url=page.url)
    title = (metadata.title if metadata else None) or ""
    output = {"markdown": "markdown", "html": "html", "text": "txt"}[fmt]
    content = trafilatura.extract(
        text, url=page.url, output_format=output, include_links=fmt != "text",
        include_formatting=fmt != "text", include_tables=True, include_comments=False,
        include_images=False,
    )  # fmt: skip
    if content is None:
        # No main content found (a page of links, a short page): all its text, or itself.
        content = text if fmt == "html" else trafilatura.html2txt(text)
    return title, content


def _decode(page: Page) -> str:
    if page.charset:
        try:
            return page.body.decode(page.charset, errors="replace")
        except LookupError:
            pass
    return decode_file(page.body)


# ---------- the endpoint ----------


async def fetch(
    caller: pipeline.Caller, body: dict, *, request_id: str, request: HttpRequest | None = None
) -> tuple[dict, pipeline.Call]:
    """Fetch and read `body`'s page for a caller, charged one page; (the answer, the call).

    What the request alone shows to be refused (its form, its host's addresses) is refused
    before the call starts, so it leaves no record; a refusal met on the way (a redirect,
    the size or time cap) ends the call at no cost, its error on its record.
    """
    spec = validate(FetchRequest, body)
    pipeline.authorize(caller, scope="fetch")
    protected = await protected_services(request)
    try:
        target, address = await check(spec.url, protected)
    except Refused as refused:
        raise ApiError(refused.status, refused.detail, code=refused.code) from None
    call = await pipeline.start(
        caller, request_id=request_id, product="fetch", endpoint=PATH, request=request,
        units={"page": 1},
    )  # fmt: skip
    async with call:
        try:
            page = await fetch_page(target, address, protected)
            call.first_byte()
            title, content = await asyncio.to_thread(convert, page, spec.format)
        except BaseException as exc:
            error = _as_api_error(exc)
            call.units, call.status = {}, error.status if error else 499
            call.error = (error.detail if error else "The caller went away.")[:255]
            if error is None:
                raise
            raise error from None
        call.status = 200
    end = spec.start_index + spec.max_length
    answer = {
        "object": "fetch.page",
        "url": spec.url,
        "final_url": page.url,
        "status": page.status,
        "title": title,
        "content_type": page.content_type,
        "format": spec.format,
        "content": content[spec.start_index : end],
        "start_index": spec.start_index,
        "total_length": len(content),
        "next_index": end if end < len(content) else None,
    }
    return answer, call


def _as_api_error(exc: BaseException) -> ApiError | None:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Refused):
        return ApiError(exc.status, exc.detail, code=exc.code)
    if isinstance(exc, TimeoutError):
        return ApiError(
            504,
            f"The page did not arrive within {settings.FETCH_TIMEOUT_SECONDS:g} seconds "
            "(FETCH_TIMEOUT_SECONDS).",
            code="fetch_timeout",
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        return ApiError(
            502, "The page's server could not be reached or broke off.", code="fetch_failed"
        )
    return None


@endpoint("POST")
async def fetch_view(request: HttpRequest) -> HttpResponse:
    answer, _ = await fetch(
        request.caller, json_body(request), request_id=request.request_id, request=request
    )
    return JsonResponse(answer)


SCHEMAS = {
    "FetchedPage": {
        "type": "object",
        "properties": {
            "object": {"const": "fetch.page"},
            "url": {"type": "string"},
            "final_url": {"type": "string"},
            "status": {"type": "integer"},
            "title": {"type": "string"},
            "content_type": {"type": "string"},
            "format": {"enum": ["markdown", "html", "text"]},
            "content": {"type": "string"},
            "start_index": {"type": "integer"},
            "total_length": {"type": "integer"},
            "next_index": {"type": ["integer", "null"]},
        },
        "required": ["url", "final_url", "title", "content_type", "content", "total_length"],
    },
}

OPERATIONS = [
    Operation(
        PATH, "post", "Fetch a web page and read its main content as Markdown, HTML or text",
        (400, 401, 402, 403, 413, 429, 502, 504), "FetchedPage", request=FetchRequest,
        example={"url": "https://example.com/", "format": "markdown"},
        view=fetch_view, name="fetch",
    ),
]  # fmt: skip
