"""The fleet of upstream nodes: choosing a node, retrying, failing over, streaming.

Every call goes through `Fleet.request` or `Fleet.stream`. A call is sent to a
healthy node that serves the model (least outstanding requests relative to weight,
between two nodes drawn by weight), and a 429/500/502/503/504, a connection error
or a timeout is retried on another node with exponential backoff that honours
`Retry-After`. A node that fails `eject_after` times in a row is ejected; a probe
(`GET /v1/models`) readmits it. A stream is retried only until its first chunk has
been handed to the caller.

The HTTP client is aiohttp, the cheapest per call of those measured (DESIGN.md,
Performance notes). An aiohttp session belongs to one event loop, and Django runs code
in several (the server's loop, and `async_to_sync` loops in other threads), so the
fleet keeps one pooled session per node per loop and closes a loop's sessions when that
loop shuts down its async generators (as `asyncio.run` and asgiref do).
"""

from __future__ import annotations

import asyncio
import functools
import json as jsonlib
import logging
import os
import random
import re
import threading
import time
import urllib.request
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from upstream.errors import FleetConfigError, UpstreamError
from upstream.nodes import ModelRef, Node, NodeConfig, parse_model
from upstream.sse import Chunk, EventReader, is_done

logger = logging.getLogger(__name__)

__all__ = [
    "Fleet",
    "FleetOptions",
    "NodeConfig",
    "Timeouts",
    "UpstreamBytes",
    "UpstreamResponse",
    "UpstreamStream",
    "get_fleet",
    "parse_model",
    "set_fleet",
]

_MAX_ERROR_BODY = 64 * 1024
# How long to wait for the end of a stream's body after `[DONE]` before giving the
# connection up.
_DRAIN_SECONDS = 0.25
# How long an idle pooled connection is kept: less than the 5 s after which uvicorn (and
# so the simulator) closes it, so that a reused connection is not one being closed.
_KEEPALIVE_SECONDS = 4.0
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# What UpstreamStream._ready_chunk returns when the next chunk has not been read yet.
_MORE = object()
_VERSIONED = re.compile(r"^/v[0-9]+(/|$)")
_USAGE = re.compile(rb'"usage"\s*:\s*(\{[^{}]*\})')


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds allowed for each phase of a call; any one expiring raises a 504.

    `first_byte` runs from sending the request to the response headers (for a
    stream: to its first chunk), so it includes sending the body; `idle` is the
    longest wait between two chunks (for a call that is not streamed, any wait for
    data, its headers included); `total` bounds the whole call, body or stream and
    retries included. `write` is not used: aiohttp has no write timeout.
    """

    connect: float = 5.0
    first_byte: float = 120.0
    idle: float = 60.0
    total: float = 600.0
    write: float = 30.0


@dataclass(frozen=True, slots=True)
class FleetOptions:
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_attempts: int = 3
    backoff_base: float = 0.05
    backoff_cap: float = 2.0
    # A retry that would have to wait longer than this (Retry-After) gives up instead.
    max_retry_wait: float = 10.0
    eject_after: int = 3
    probe_interval: float = 5.0
    max_connections: int = 512
    # Not used: aiohttp keeps every idle connection (within max_connections) for a few
    # seconds, with no separate cap.
    max_keepalive: int = 128


@dataclass(slots=True)
class UpstreamResponse:
    """A complete upstream answer (2xx): status, headers, body and where it came from."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    node: str
    latency_ms: float
    attempts: int = 1

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def usage(self) -> dict[str, Any]:
        """The answer's top-level `usage` object ({} when it has none).

        When the body holds one flat `"usage": {...}`, only that is parsed: a relay that
        sends the body on as it came does not need the rest. (Inside a JSON string a
        quote is escaped, so `"usage"` there cannot match.)
        """
        found = _USAGE.findall(self.content)
        if len(found) == 1:
            usage = jsonlib.loads(found[0])
        else:
            body = self.json()
            usage = body.get("usage") if isinstance(body, dict) else None
        return usage if isinstance(usage, dict) else {}

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/octet-stream")

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _detail_from_body(body: bytes, fallback: str) -> tuple[str, str | None]:
    """The `detail` (or OpenAI-style `error.message`) and error code of an error body."""
    try:
        data = jsonlib.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return (text[:300] or fallback), None
    if isinstance(data, dict):
        detail = data.get("detail")
        error = data.get("error")
        code = None
        if isinstance(error, dict):
            code = error.get("code") if isinstance(error.get("code"), str) else None
            if detail is None:
                detail = error.get("message")
        if isinstance(detail, str):
            return detail, code
        if detail is not None:
            return jsonlib.dumps(detail)[:300], code
    return fallback, None


def _status_for_stream_error(code: str | None) -> int:
    if code in ("queue_full", "overloaded", "server_busy"):
        return 503
    if code == "rate_limit_exceeded":
        return 429
    return 502


@functools.lru_cache(maxsize=64)
def _client_timeout(limits: Timeouts, *, stream: bool) -> aiohttp.ClientTimeout:
    """aiohttp's part of the timeouts; the fleet's own timers do `first_byte` and `total`.

    `connect` also bounds the wait for a free pooled connection. `sock_read` bounds each
    wait for data, the headers included; a stream times its chunks itself, so it goes
    without (aiohttp restarts that timer on every packet, which costs CPU per chunk).
    """
    return aiohttp.ClientTimeout(
        total=None,
        connect=limits.connect,
        sock_connect=limits.connect,
        sock_read=None if stream else limits.idle,
    )


def _json_bytes(value: Any) -> bytes:
    return jsonlib.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class _LentFile(aiohttp.payload.IOBasePayload):
    """A caller's file, sent in chunks as it is read. aiohttp closes a file once it has
    sent it; this one is left open (it is the caller's), so that a retry can send it again."""

    def _close(self) -> None:
        self._consumed = True

    async def close(self) -> None:
        self._close()


def _request_body(
    content: bytes | None, data: Mapping[str, Any] | None, files: Mapping[str, Any] | None
) -> Any:
    """aiohttp's `data=`: the bytes, a URL-encoded form, or a multipart form with files.

    A multipart form can be sent only once, so every attempt builds its own. A file is
    bytes or a seekable binary file, or `(filename, file)`, or `(filename, file, content
    type)`. A file object is sent in chunks as it is read, never held whole, and is
    rewound for each attempt so that a retry sends all of it again.
    """
    if content is not None:
        return content
    if not files:
        return data
    form = aiohttp.FormData()
    for name, value in (data or {}).items():
        form.add_field(name, value)
    for name, file in files.items():
        filename, payload, *rest = file if isinstance(file, tuple) else (name, file)
        if hasattr(payload, "read"):
            payload.seek(0)
            kind = {"content_type": rest[0]} if rest else {}
            payload = _LentFile(payload, filename=filename, **kind)
        form.add_field(name, payload, filename=filename, content_type=rest[0] if rest else None)
    return form


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for a remote node (`HTTPS_PROXY`, `NO_PROXY`...).

    Read once per session: aiohttp's `trust_env` would look it up in a thread on every
    request, and would also add `.netrc` credentials beside the node's key.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in _LOCAL_HOSTS or urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class _LoopSessions:
    """The aiohttp sessions one event loop uses, one per node."""

    def __init__(self) -> None:
        self.sessions: dict[str, aiohttp.ClientSession] = {}
        self.closer: AsyncGenerator[None, None] | None = None


class Fleet:
    """A set of upstream nodes and the policy for calling them. See the module docstring."""

    def __init__(
        self,
        nodes: Iterable[NodeConfig],
        *,
        options: FleetOptions | None = None,
        is_simulator: bool = False,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.nodes = [Node(config) for config in nodes]
        # Model names clients ask for (exact or `*`/`?` globs) -> the model served, for
        # every workspace (the gateway applies them; a workspace's own come first).
        self.aliases = dict(aliases or {})
        if not self.nodes:
            raise FleetConfigError("the fleet has no nodes")
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            raise FleetConfigError("node names must be unique")
        self.options = options or FleetOptions()
        self.is_simulator = is_simulator
        self._by_name = {node.name: node for node in self.nodes}
        self._roots = {node.name: node.config.root_url for node in self.nodes}
        self._loops: dict[asyncio.AbstractEventLoop, _LoopSessions] = {}
        self._loops_lock = threading.Lock()
        self._probe_tasks: set[asyncio.Task[None]] = set()

    # --- construction -----------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, options: FleetOptions | None = None) -> Fleet:
        """Build the fleet the environment describes (see DESIGN.md, Configuration).

        `MIRA_FLEET_FILE` names a JSON list of nodes; otherwise `MIRA_API_BASE` and
        `MIRA_API_KEY` (or `MIRA_API_KEY_FILE`) name one node; with neither, the
        built-in simulator is started in this process and becomes the only node.
        `MIRA_UPSTREAM_CONNECTIONS` caps the open connections to each node (512).
        """
        fleet_file = environ.get("MIRA_FLEET_FILE", "")
        base = environ.get("MIRA_API_BASE", "")
        connections = environ.get("MIRA_UPSTREAM_CONNECTIONS", "")
        if connections and options is None:
            # Each open call (a stream, while it lasts) holds one connection to its node.
            try:
                options = FleetOptions(max_connections=int(connections))
            except ValueError:
                raise FleetConfigError("MIRA_UPSTREAM_CONNECTIONS must be a whole number") from None
            if options.max_connections < 1:
                raise FleetConfigError("MIRA_UPSTREAM_CONNECTIONS must be at least 1")
        if fleet_file:
            if base:
                logger.warning("MIRA_FLEET_FILE is set, so MIRA_API_BASE is ignored")
            nodes, aliases = read_fleet_file(fleet_file, environ)
            return cls(nodes, options=options, aliases=aliases)
        if base:
            key = environ.get("MIRA_API_KEY", "")
            key_file = environ.get("MIRA_API_KEY_FILE", "")
            if key_file:
                try:
                    key = Path(key_file).read_text().strip()
                except OSError as exc:
                    raise FleetConfigError(
                        f"MIRA_API_KEY_FILE cannot be read: {exc.strerror}"
                    ) from None
            if not key:
                raise FleetConfigError("MIRA_API_BASE is set but MIRA_API_KEY is not")
            name = urlsplit(base).hostname or "upstream"
            return cls([NodeConfig(name=name, base_url=base, api_key=key)], options=options)
        from upstream.simulator.server import builtin_simulator

        delay = environ.get("MIRA_SIMULATOR_CHUNK_DELAY_MS", "")
        try:
            chunk_delay_ms = float(delay) if delay else None
        except ValueError:
            raise FleetConfigError("MIRA_SIMULATOR_CHUNK_DELAY_MS must be a number") from None
        simulator = builtin_simulator(chunk_delay_ms=chunk_delay_ms)
        node = NodeConfig(name="simulator", base_url=simulator.base_url, api_key=simulator.key)
        return cls([node], options=options, is_simulator=True)

    # --- public API -------------------------------------------------------------

    def node_names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def state(self) -> list[dict[str, Any]]:
        """Each node's state for a fleet page; never includes a key."""
        return [node.state() for node in self.nodes]

    def resolve_model(self, model: str) -> ModelRef:
        """How a model id routes: `provider/model` names a provider only if a node has it."""
        ref = parse_model(model)
        if ref.provider and not any(
            ref.provider in (n.name, n.config.provider) for n in self.nodes
        ):
            return ModelRef(None, model)
        return ref

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
        node: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> UpstreamResponse:
        """Send one call and return the complete 2xx answer, retrying as the policy says.

        `model` routes the call (a `provider/model` id picks the provider's nodes) and,
        when `json` carries the same id under "model", the bare model is sent
        upstream. `node` pins the call to one node (to poll a job it created) and
        disables failover. Files are bytes or seekable files (see `_request_body`),
        so that a retry can resend them. Raises UpstreamError when the last attempt fails.
        """
        limits = timeouts or self.options.timeouts
        candidates, json = self._route(model, node, json)
        deadline = asyncio.get_running_loop().time() + limits.total

        async def send(chosen: Node, attempt: int) -> UpstreamResponse:
            response = await self._send(
                chosen,
                method,
                path,
                limits,
                deadline,
                json=json,
                data=_request_body(content, data, files),
                params=params,
                headers=headers,
            )
            response.attempts = attempt
            return response

        return await self._attempts(candidates, deadline, send)

    async def _attempts[T](
        self,
        candidates: list[Node],
        deadline: float,
        attempt: Callable[[Node, int], Awaitable[T]],
    ) -> T:
        """`attempt(node, number)` on the candidates, as the retry policy says (another
        node, a wait, no more than `max_attempts`, nothing past `deadline`): the first
        success. Raises the last UpstreamError, or at once one that is not retryable."""
        tried: set[str] = set()
        last: UpstreamError | None = None
        for number in range(1, self.options.max_attempts + 1):
            chosen = self._pick(candidates, tried)
            if number > 1:
                assert last is not None
                if not await self._wait_before_retry(number, chosen, deadline, last):
                    break
            tried.add(chosen.name)
            try:
                return await attempt(chosen, number)
            except UpstreamError as exc:
                last = exc
                if not exc.retryable:
                    raise
        assert last is not None
        raise last

    def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
        node: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> UpstreamStream:
        """An SSE call, used as `async with fleet.stream(...) as s: async for chunk in s`.

        Entering the block waits for the first chunk, retrying on another node
        until one arrives; after that a failure raises UpstreamError (502 for a
        reset, 504 for a timeout) from the loop. Leaving the block, or cancelling
        the task, closes the upstream connection at once.
        """
        return UpstreamStream(
            self, method, path, json=json, headers=headers, model=model, node=node,
            timeouts=timeouts or self.options.timeouts,
        )  # fmt: skip

    def stream_bytes(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> UpstreamBytes:
        """A call whose answer is relayed as raw bytes (audio), as they arrive:
        `async with fleet.stream_bytes(...) as s: async for piece in s`.

        Entering the block waits for the answer's headers, retrying on another node until
        a 2xx arrives; after that a failure raises UpstreamError from the loop. Leaving
        the block closes the upstream connection unless the body was read to its end.
        """
        return UpstreamBytes(
            self, method, path, json=json, headers=headers, model=model,
            timeouts=timeouts or self.options.timeouts,
        )  # fmt: skip

    async def download(
        self, url: str, *, node: str, timeouts: Timeouts | None = None
    ) -> UpstreamResponse:
        """Fetch a file a node pointed to (a job's `audio_url` or `video_url`).

        A URL on the node's own origin is fetched with the node's key; any other
        URL (a CDN) is fetched without credentials, so the key never leaves.
        """
        owner = self._by_name.get(node)
        if owner is None:
            raise UpstreamError(502, f"Unknown upstream node {node!r}.")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise UpstreamError(502, "The node returned a file URL that is not http(s).", node=node)
        root = urlsplit(owner.config.root_url)
        if (parts.scheme, parts.netloc) == (root.scheme, root.netloc):
            return await self.request("GET", url, node=node, timeouts=timeouts)
        limits = timeouts or self.options.timeouts
        started = time.perf_counter()
        try:
            # A session of its own: nothing of the node's (key, pool) goes to another host.
            async with aiohttp.ClientSession(
                timeout=_client_timeout(limits, stream=False),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=True,
            ) as session:
                async with asyncio.timeout(limits.total):
                    async with session.get(url) as response:
                        content = await response.read()
        except TimeoutError:
            raise UpstreamError(504, "Timed out downloading the file.", node=node) from None
        except aiohttp.ClientError:
            raise UpstreamError(502, "Downloading the file failed.", node=node) from None
        if response.status >= 400:
            raise UpstreamError(response.status, "Downloading the file failed.", node=node)
        return UpstreamResponse(
            status=response.status,
            headers=response.headers,
            content=content,
            node=node,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    async def probe(self, *, all_nodes: bool = False) -> dict[str, bool]:
        """Probe ejected nodes now (or every node) with `GET /v1/models`."""
        nodes = [n for n in self.nodes if all_nodes or not n.healthy]
        results = await asyncio.gather(*(self._probe(n, forced=True) for n in nodes))
        return {n.name: ok for n, ok in zip(nodes, results, strict=True)}

    async def aclose(self) -> None:
        """Close the sessions of the running loop (other loops close theirs on shutdown)."""
        loop = asyncio.get_running_loop()
        entry = self._loops.get(loop)
        if entry is not None:
            await entry.closer.aclose()
        for task in list(self._probe_tasks):
            if task.get_loop() is loop:
                task.cancel()

    # --- routing ----------------------------------------------------------------

    def _route(self, model: str | None, pinned: str | None, json: Any) -> tuple[list[Node], Any]:
        if pinned is not None:
            node = self._by_name.get(pinned)
            if node is None:
                raise UpstreamError(502, f"Unknown upstream node {pinned!r}.")
            candidates = [node]
        else:
            candidates = self.nodes
        if model:
            ref = self.resolve_model(model)
            if pinned is None:
                candidates = [n for n in candidates if n.config.serves(ref)]
                if not candidates:
                    raise UpstreamError(400, f"No upstream node serves the model {model!r}.")
            if isinstance(json, dict) and json.get("model") == model and ref.name != model:
                json = {**json, "model": ref.name}
        return candidates, json

    def _pick(self, candidates: list[Node], tried: set[str]) -> Node:
        now = time.monotonic()
        self._start_due_probes(now)
        pool = [n for n in candidates if n.name not in tried] or candidates
        ready = [n for n in pool if n.healthy and n.cooldown_until <= now]
        ready = ready or [n for n in pool if n.healthy] or pool
        if len(ready) == 1:
            return ready[0]
        # Power of two choices: two nodes drawn by weight, the less loaded one wins.
        first = random.choices(ready, weights=[n.config.weight for n in ready])[0]
        rest = [n for n in ready if n is not first]
        second = random.choices(rest, weights=[n.config.weight for n in rest])[0]
        load_first = first.outstanding / first.config.weight
        load_second = second.outstanding / second.config.weight
        return second if load_second < load_first else first

    async def _wait_before_retry(
        self, attempt: int, node: Node, deadline: float, last: UpstreamError
    ) -> bool:
        """Sleep before the next attempt; False when the wait would be too long."""
        loop = asyncio.get_running_loop()
        delay = min(self.options.backoff_cap, self.options.backoff_base * 2 ** (attempt - 2))
        delay *= random.uniform(0.5, 1.0)
        if node.name == last.node and last.retry_after is not None:
            delay = max(delay, last.retry_after)
        delay = max(delay, node.cooldown_until - time.monotonic())
        if delay > self.options.max_retry_wait or loop.time() + delay >= deadline:
            return False
        await asyncio.sleep(delay)
        return True

    # --- sending ----------------------------------------------------------------

    async def _session(self, node: Node) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        entry = self._loops.get(loop)
        if entry is None:
            entry = _LoopSessions()
            with self._loops_lock:
                dead = [self._loops.pop(old) for old in list(self._loops) if old.is_closed()]
                self._loops[loop] = entry
            entry.closer = self._close_with_loop(loop, entry)
            # The loop now tracks the generator and closes it in shutdown_asyncgens().
            await entry.closer.__anext__()
            # A loop closed without that hook can run nothing any more: closing its
            # sessions here only marks them closed (aiohttp leaves the transports of a
            # closed loop alone, and the garbage collector closes their sockets).
            for old in dead:
                for session in old.sessions.values():
                    await session.close()
        session = entry.sessions.get(node.name)
        if session is None:
            session = self._new_session(node)
            entry.sessions[node.name] = session
        return session

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, entry: _LoopSessions
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._loops_lock:
                if self._loops.get(loop) is entry:
                    del self._loops[loop]
            sessions = list(entry.sessions.values())
            entry.sessions.clear()
            for session in sessions:
                await session.close()

    def _new_session(self, node: Node) -> aiohttp.ClientSession:
        root = self._roots[node.name]
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.options.max_connections, keepalive_timeout=_KEEPALIVE_SECONDS
            ),
            headers={
                "Authorization": f"Bearer {node.config.api_key}",
                # What aiohttp sends by default, but fixed: installing brotli or zstandard
                # must not change what the nodes are asked for. Bodies are decoded.
                "Accept-Encoding": "gzip, deflate",
            },
            timeout=_client_timeout(self.options.timeouts, stream=False),
            proxy=_proxy_for(root),
            cookie_jar=aiohttp.DummyCookieJar(),
            json_serialize_bytes=_json_bytes,
            raise_for_status=False,
            auto_decompress=True,
        )

    def _url(self, node: Node, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        if not path.startswith("/"):
            path = "/" + path
        if not _VERSIONED.match(path):
            path = "/v1" + path
        return self._roots[node.name] + path

    async def _send(
        self,
        node: Node,
        method: str,
        path: str,
        limits: Timeouts,
        deadline: float,
        *,
        json: Any,
        data: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
    ) -> UpstreamResponse:
        session = await self._session(node)
        url = self._url(node, path)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        node.begin()
        try:
            phase = "the first byte"
            try:
                async with asyncio.timeout_at(min(loop.time() + limits.first_byte, deadline)):
                    response = await session.request(
                        method,
                        url,
                        json=json,
                        data=data,
                        params=params,
                        headers=headers,
                        timeout=_client_timeout(limits, stream=False),
                        # A node's redirect is an answer; following it could take the key along.
                        allow_redirects=False,
                    )
                first_byte_ms = (time.perf_counter() - started) * 1000
                try:
                    phase = "the response body"
                    if response.content.is_eof():  # all here already: no timer needed
                        body = await response.read()
                    else:
                        async with asyncio.timeout_at(deadline):
                            body = await response.read()
                finally:
                    # Back to the pool once the body is read; closed if it was not.
                    response.release()
            except TimeoutError as exc:
                raise self._timeout_error(node, phase, exc) from None
            except aiohttp.ClientError as exc:
                raise self._connection_error(node, exc) from None
            if response.status >= 400:
                raise self._status_error(node, response, body)
            self._succeeded(node, first_byte_ms)
            return UpstreamResponse(
                status=response.status,
                headers=response.headers,
                content=body,
                node=node.name,
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
            )
        finally:
            node.end()

    # --- outcomes ---------------------------------------------------------------

    def _succeeded(self, node: Node, latency_ms: float | None) -> None:
        if node.record_success(latency_ms):
            logger.info("Upstream node %s answered again and is readmitted", node.name)

    def _failed(self, node: Node, error: UpstreamError) -> UpstreamError:
        summary = f"{error.status}: {error.detail}"
        if error.status == 429:
            node.record_rate_limit(summary, error.retry_after)
        elif error.retryable:
            ejected = node.record_failure(
                summary,
                eject_after=self.options.eject_after,
                probe_interval=self.options.probe_interval,
            )
            if ejected:
                logger.warning(
                    "Upstream node %s ejected after %d consecutive failures; last: %s",
                    node.name,
                    node.consecutive_failures,
                    error.detail,
                )
        else:
            # The node answered; the request was at fault, not the node.
            node.record_success(None)
        return error

    def _error(self, node: Node, status: int, detail: str, **kwargs: Any) -> UpstreamError:
        error = UpstreamError(
            status, detail, node=node.name, secrets=(node.config.api_key,), **kwargs
        )
        return self._failed(node, error)

    def _timeout_error(self, node: Node, phase: str, exc: BaseException) -> UpstreamError:
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            phase = "a connection"
        elif isinstance(exc, aiohttp.SocketTimeoutError):
            phase = "data"
        return self._error(node, 504, f"Timed out waiting for {phase} from the upstream node.")

    def _connection_error(self, node: Node, exc: aiohttp.ClientError) -> UpstreamError:
        kind = type(exc).__name__
        if isinstance(exc, aiohttp.ClientConnectorError):
            detail = "Could not connect to the upstream node."
        elif isinstance(
            exc,
            aiohttp.ServerDisconnectedError
            | aiohttp.ClientPayloadError
            | aiohttp.ClientOSError
            | aiohttp.ClientConnectionResetError,
        ):
            detail = "The upstream node closed the connection unexpectedly."
        else:
            detail = f"The connection to the upstream node failed ({kind})."
        return self._error(node, 502, detail)

    def _status_error(
        self, node: Node, response: aiohttp.ClientResponse, body: bytes
    ) -> UpstreamError:
        fallback = response.reason or f"HTTP {response.status}"
        detail, code = _detail_from_body(body[:_MAX_ERROR_BODY], fallback)
        return self._error(
            node,
            response.status,
            detail,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            code=code,
        )

    # --- health probes ----------------------------------------------------------

    def _start_due_probes(self, now: float) -> None:
        for node in self.nodes:
            if node.probe_due(now):
                task = asyncio.get_running_loop().create_task(self._probe(node))
                self._probe_tasks.add(task)
                task.add_done_callback(self._probe_tasks.discard)

    async def _probe(self, node: Node, *, forced: bool = False) -> bool:
        if forced:
            with node._lock:
                node.probing = True
        ok = False
        try:
            session = await self._session(node)
            limits = self.options.timeouts
            async with asyncio.timeout(limits.connect + min(limits.first_byte, 10.0)):
                url = self._url(node, "/v1/models")
                async with session.get(url, allow_redirects=False) as response:
                    await response.read()
            ok = response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            ok = False
        finally:
            if node.probe_finished(ok, self.options.probe_interval):
                logger.info("Upstream node %s passed its probe and is readmitted", node.name)
        return ok


class UpstreamStream:
    """One streamed call: `node`, `status`, `headers`, and the parsed chunks.

    `done` is True once `data: [DONE]` arrived; `chunks` counts the chunks handed
    out; `first_chunk_ms` is the time from the first attempt to the first chunk.
    """

    def __init__(
        self,
        fleet: Fleet,
        method: str,
        path: str,
        *,
        json: Any,
        headers: Mapping[str, str] | None,
        model: str | None,
        node: str | None,
        timeouts: Timeouts,
    ) -> None:
        self._fleet = fleet
        self._method = method
        self._path = path
        self._json = json
        # An event stream whatever the caller's headers say.
        self._headers = {k: v for k, v in (headers or {}).items() if k.lower() != "accept"}
        self._headers["Accept"] = "text/event-stream"
        self._model = model
        self._pinned = node
        self._timeouts = timeouts
        self._node: Node | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._reader = EventReader()
        self._ready: deque[bytes] = deque()
        self._pending: Chunk | None = None
        self._deadline = 0.0
        self._finished = False
        self._failure: UpstreamError | None = None
        self._last_read = 0.0
        self._attempt_ms = 0.0
        self.node: str = ""
        self.status = 0
        self.headers: Mapping[str, str] = {}
        self.done = False
        self.chunks = 0
        self.first_chunk_ms: float | None = None
        self.attempts = 0

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")

    async def __aenter__(self) -> UpstreamStream:
        fleet = self._fleet
        candidates, body = fleet._route(self._model, self._pinned, self._json)
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self._timeouts.total
        started = time.perf_counter()

        async def open_on(node: Node, attempt: int) -> UpstreamStream:
            self.attempts = attempt
            try:
                await self._open(node, body)
            except UpstreamError:
                raise
            except BaseException:
                await self._close()
                raise
            self.first_chunk_ms = round((time.perf_counter() - started) * 1000, 2)
            fleet._succeeded(node, self._attempt_ms)
            return self

        return await fleet._attempts(candidates, self._deadline, open_on)

    async def _open(self, node: Node, body: Any) -> None:
        """Connect to one node and read up to the first chunk; raises UpstreamError."""
        fleet = self._fleet
        session = await fleet._session(node)
        url = fleet._url(node, self._path)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        node.begin()
        self._node = node
        self._reset_reader()
        try:
            try:
                async with asyncio.timeout_at(
                    min(loop.time() + self._timeouts.first_byte, self._deadline)
                ):
                    self._response = response = await session.request(
                        self._method,
                        url,
                        json=body,
                        headers=self._headers,
                        timeout=_client_timeout(self._timeouts, stream=True),
                        allow_redirects=False,
                    )
                    if response.status >= 400:
                        payload = await response.read()
                        raise fleet._status_error(node, response, payload)
                    content_type = response.headers.get("content-type", "")
                    if not content_type.startswith("text/event-stream"):
                        raise fleet._error(
                            node, 502, "The upstream node did not answer with an event stream."
                        )
                    self._pending = await self._next_chunk(node, first=True)
                    self._last_read = loop.time()
            except TimeoutError as exc:
                raise fleet._timeout_error(node, "the first chunk", exc) from None
            except aiohttp.ClientError as exc:
                raise fleet._connection_error(node, exc) from None
        except UpstreamError:
            await self._close()
            raise
        self._attempt_ms = round((time.perf_counter() - started) * 1000, 2)
        self.node = node.name
        self.status = response.status
        self.headers = response.headers

    def _reset_reader(self) -> None:
        self._reader = EventReader()
        self._ready = deque()
        self._pending = None
        self._finished = False
        self._failure = None
        self._last_read = 0.0

    def _ready_chunk(self, node: Node, *, first: bool = False) -> Chunk | None | object:
        """The next chunk among the events already read, None at `[DONE]` or the end of
        the body, or `_MORE` when the next chunk has not arrived yet. Never waits.

        A chunk is parsed here only when it may carry an error; the others are parsed
        by whoever needs their content (`Chunk.data`), and a relay that passes them on
        as they came never does.
        """
        if self._ready:
            data = self._ready.popleft()
            if is_done(data):
                self.done = True
                return None
            chunk = Chunk(data)
            if b'"error"' in data:
                self._raise_if_error(node, self.parsed(chunk), first=first)
            return chunk
        return None if self._finished else _MORE

    def parsed(self, chunk: Chunk) -> dict[str, Any]:
        """A chunk's JSON object; UpstreamError (502) when the node sent something else."""
        try:
            return chunk.data
        except ValueError:
            raise self.malformed() from None

    def malformed(self) -> UpstreamError:
        detail = "The upstream node sent a malformed event."
        node = self._node
        return self._fleet._error(node, 502, detail) if node else UpstreamError(502, detail)

    def _raise_if_error(self, node: Node, data: dict[str, Any], *, first: bool) -> None:
        error = data.get("error")
        if data.get("type") == "error":
            error = data
        if isinstance(error, dict) and "choices" not in data:
            code = error.get("code") if isinstance(error.get("code"), str) else None
            message = error.get("message")
            raise self._fleet._error(
                node,
                _status_for_stream_error(code) if first else 502,
                message if isinstance(message, str) else "The upstream stream failed.",
                code=code,
            )

    async def _read(self) -> None:
        """Wait for the next piece of the body and split it into events. Cancelling this
        loses nothing: aiohttp keeps what arrived until the next read."""
        assert self._response is not None
        piece = await self._response.content.readany()
        if piece:
            self._ready.extend(self._reader.feed(piece))
        else:
            self._finished = True
            self._ready.extend(self._reader.flush())

    def _read_arrived(self) -> bool:
        """Split what has arrived without waiting; False when nothing had."""
        assert self._response is not None
        piece = self._response.content.read_nowait()
        if piece:
            self._ready.extend(self._reader.feed(piece))
            self._last_read = asyncio.get_running_loop().time()
        return bool(piece)

    async def _next_chunk(self, node: Node, *, first: bool = False) -> Chunk | None:
        """The next chunk, or None at `[DONE]` or the end of the body."""
        while (chunk := self._ready_chunk(node, first=first)) is _MORE:
            await self._read()
        return chunk  # type: ignore[return-value]

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._pending is not None:
            chunk, self._pending = self._pending, None
            self.chunks += 1
            return self.parsed(chunk)
        node = self._node
        if node is None or self._response is None or self.done:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(loop.time() + self._timeouts.idle, self._deadline)):
                chunk = await self._next_chunk(node)
        except TimeoutError as exc:
            raise self._fleet._timeout_error(node, "the next chunk", exc) from None
        except aiohttp.ClientError as exc:
            raise self._fleet._connection_error(node, exc) from None
        if chunk is None:
            raise StopAsyncIteration
        self.chunks += 1
        return self.parsed(chunk)

    async def batch(self, wait: float) -> list[Chunk] | None:
        """Every chunk that has arrived, waiting for the first one if none has.

        Returns `[]` when nothing came within `wait` seconds (time for a keep-alive) and
        None once the stream has ended. A relay that sends each batch at once sends a
        chunk as soon as it arrives, in one write with the others that came with it.
        Raises UpstreamError (after handing out the chunks that came before it) when the
        upstream fails, and when it sends nothing for the idle timeout.
        """
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        chunks: list[Chunk] = []
        if self._pending is not None:
            chunks.append(self._pending)
            self._pending = None
        node = self._node
        while node is not None and self._response is not None and not self.done:
            try:
                chunk = self._ready_chunk(node)
            except UpstreamError as exc:
                if not chunks:
                    raise
                self._failure = exc
                break
            if chunk is None:
                break
            if chunk is not _MORE:
                chunks.append(chunk)  # type: ignore[arg-type]
                continue
            try:
                if self._read_arrived():
                    continue
            except aiohttp.ClientError as exc:  # the body broke off after what came before
                failure = self._fleet._connection_error(node, exc)
                if not chunks:
                    raise failure from None
                self._failure = failure
                break
            if chunks:
                break
            loop = asyncio.get_running_loop()
            idle_at = min(self._last_read + self._timeouts.idle, self._deadline)
            wake_at = min(loop.time() + wait, idle_at)
            try:
                async with asyncio.timeout_at(wake_at):
                    await self._read()
            except TimeoutError as exc:
                if wake_at < idle_at:
                    return []
                raise self._fleet._timeout_error(node, "the next chunk", exc) from None
            except aiohttp.ClientError as exc:
                raise self._fleet._connection_error(node, exc) from None
            self._last_read = loop.time()
        self.chunks += len(chunks)
        return chunks or None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    @staticmethod
    async def _drain(response: aiohttp.ClientResponse) -> None:
        """Read the little that follows `[DONE]`, so the connection goes back to the pool
        instead of being dropped (a new connection per stream costs a handshake)."""
        try:
            async with asyncio.timeout(_DRAIN_SECONDS):
                while await response.content.readany():
                    pass
        except (TimeoutError, aiohttp.ClientError):
            pass

    async def _close(self) -> None:
        node, self._node = self._node, None
        response, self._response = self._response, None
        try:
            if response is not None and self.done and not self._finished:
                await self._drain(response)
        finally:
            if response is not None:
                if response.content.is_eof():
                    response.release()
                else:
                    # Closes the connection at once, so that the node stops generating.
                    response.close()
            if node is not None:
                node.end()


class UpstreamBytes:
    """One call whose body is handed out piece by piece as it arrives (not SSE): `node`,
    `status` and `headers` once entered. See `Fleet.stream_bytes`."""

    def __init__(
        self,
        fleet: Fleet,
        method: str,
        path: str,
        *,
        json: Any,
        headers: Mapping[str, str] | None,
        model: str | None,
        timeouts: Timeouts,
    ) -> None:
        self._fleet = fleet
        self._method = method
        self._path = path
        self._json = json
        self._headers = headers
        self._model = model
        self._timeouts = timeouts
        self._node: Node | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._deadline = 0.0
        self.node = ""
        self.status = 0
        self.headers: Mapping[str, str] = {}
        self.attempts = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/octet-stream")

    async def __aenter__(self) -> UpstreamBytes:
        fleet = self._fleet
        candidates, body = fleet._route(self._model, None, self._json)
        self._deadline = asyncio.get_running_loop().time() + self._timeouts.total

        async def open_on(node: Node, attempt: int) -> UpstreamBytes:
            self.attempts = attempt
            await self._open(node, body)
            return self

        return await fleet._attempts(candidates, self._deadline, open_on)

    async def _open(self, node: Node, body: Any) -> None:
        """Send the call to one node and wait for a 2xx answer's headers."""
        fleet = self._fleet
        session = await fleet._session(node)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        node.begin()
        try:
            try:
                async with asyncio.timeout_at(
                    min(loop.time() + self._timeouts.first_byte, self._deadline)
                ):
                    response = await session.request(
                        self._method,
                        fleet._url(node, self._path),
                        json=body,
                        headers=self._headers,
                        timeout=_client_timeout(self._timeouts, stream=True),
                        allow_redirects=False,
                    )
                    if response.status >= 400:
                        try:
                            payload = await response.read()
                        finally:
                            response.release()
                        raise fleet._status_error(node, response, payload)
            except TimeoutError as exc:
                raise fleet._timeout_error(node, "the first byte", exc) from None
            except aiohttp.ClientError as exc:
                raise fleet._connection_error(node, exc) from None
        except BaseException:
            node.end()
            raise
        fleet._succeeded(node, round((time.perf_counter() - started) * 1000, 2))
        self._node, self._response = node, response
        self.node, self.status, self.headers = node.name, response.status, response.headers

    def __aiter__(self) -> UpstreamBytes:
        return self

    async def __anext__(self) -> bytes:
        node, response = self._node, self._response
        if node is None or response is None:
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(loop.time() + self._timeouts.idle, self._deadline)):
                piece = await response.content.readany()
        except TimeoutError as exc:
            raise self._fleet._timeout_error(node, "the next chunk", exc) from None
        except aiohttp.ClientError as exc:
            raise self._fleet._connection_error(node, exc) from None
        if not piece:
            raise StopAsyncIteration
        return piece

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        node, self._node = self._node, None
        response, self._response = self._response, None
        if response is not None:
            if response.content.is_eof():
                response.release()
            else:
                response.close()  # so that the node stops sending
        if node is not None:
            node.end()


# --- the process-wide fleet ---------------------------------------------------------


_ALIAS_PATTERN = re.compile(r"[A-Za-z0-9._:/@*?-]{1,128}")


def read_fleet_file(
    path: str, environ: Mapping[str, str]
) -> tuple[list[NodeConfig], dict[str, str]]:
    """Read a fleet file: a JSON list of nodes, or `{"nodes": [...], "aliases": {...}}`
    where `aliases` maps model names clients ask for (exact, or globs with `*` and `?`)
    to the model served."""
    try:
        raw = jsonlib.loads(Path(path).read_text())
    except OSError as exc:
        raise FleetConfigError(f"MIRA_FLEET_FILE cannot be read: {exc.strerror}") from None
    except ValueError as exc:
        raise FleetConfigError(f"MIRA_FLEET_FILE is not valid JSON: {exc}") from None
    aliases: dict[str, str] = {}
    if isinstance(raw, dict):
        aliases = _fleet_aliases(raw.get("aliases", {}))
        raw = raw.get("nodes")
    if not isinstance(raw, list) or not raw:
        raise FleetConfigError("MIRA_FLEET_FILE must hold a non-empty list of nodes")
    allowed = {"name", "base_url", "api_key", "api_key_env", "weight", "models", "provider"}
    nodes = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise FleetConfigError(f"fleet node {index} must be an object")
        label = item.get("name") or f"number {index}"
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise FleetConfigError(f"fleet node {label}: unknown field {unknown[0]!r}")
        key = item.get("api_key") or ""
        if not key and item.get("api_key_env"):
            key = environ.get(str(item["api_key_env"]), "")
            if not key:
                raise FleetConfigError(
                    f"fleet node {label}: the variable {item['api_key_env']} is not set"
                )
        models = item.get("models")
        if models is not None and (
            not isinstance(models, list) or not all(isinstance(m, str) for m in models)
        ):
            raise FleetConfigError(f"fleet node {label}: models must be a list of strings")
        weight = item.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise FleetConfigError(f"fleet node {label}: weight must be a number")
        nodes.append(
            NodeConfig(
                name=str(item.get("name") or ""),
                base_url=str(item.get("base_url") or ""),
                api_key=str(key),
                weight=float(weight),
                models=frozenset(models) if models is not None else None,
                provider=str(item["provider"]) if item.get("provider") else None,
            )
        )
    return nodes, aliases


def _fleet_aliases(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise FleetConfigError("the fleet file's aliases must be an object of name: model")
    for pattern, target in raw.items():
        if not _ALIAS_PATTERN.fullmatch(pattern):
            raise FleetConfigError(
                f"fleet alias {pattern!r}: use letters, digits, . _ - : / @ and the wildcards * ?"
            )
        if not isinstance(target, str) or not target or "*" in target or "?" in target:
            raise FleetConfigError(f"fleet alias {pattern!r}: the model must be a model name")
    return dict(raw)


_fleet: Fleet | None = None
_fleet_pid = 0
_fleet_lock = threading.Lock()


def get_fleet() -> Fleet:
    """The process's fleet, built from `os.environ` on first use (and again after a fork)."""
    global _fleet, _fleet_pid
    fleet = _fleet
    if fleet is not None and _fleet_pid == os.getpid():
        return fleet
    with _fleet_lock:
        if _fleet is None or _fleet_pid != os.getpid():
            _fleet = Fleet.from_env(os.environ)
            _fleet_pid = os.getpid()
        return _fleet


def set_fleet(fleet: Fleet | None) -> Fleet | None:
    """Replace the process's fleet (tests, reconfiguration); returns the previous one."""
    global _fleet, _fleet_pid
    with _fleet_lock:
        previous, _fleet, _fleet_pid = _fleet, fleet, os.getpid()
        return previous
