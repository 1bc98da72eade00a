"""One pipeline for every model call, from the /v1 API and from the playground alike.

authenticate -> authorize -> limit -> (reserve) -> route and relay -> meter -> respond.

`authenticate()` turns a request into a `Caller`; `start()` authorizes, limits and
reserves a call for that caller and returns a `Call`. The `Call` does the steps every
product shares: `forward()` sends the request through the fleet and `open_stream()`
opens a stream (an upstream failure becomes the caller's error, and costs nothing
before the first byte), and the call is booked exactly once, whatever happens, when
its `async with` block ends (or by `finish()`), so a call is never lost from the books.
A product module (gateway/<product>.py) says only what is its own: the request schema,
the worst case to hold, and the units to read from the answer.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from console import books, db, keys, ledger, pricing, usage
from console.keys import KeyInfo
from console.shared import counter_add_and_get, counter_add_task
from console.usage import cost_of
from gateway import calllog
from gateway.errors import ApiError
from upstream.errors import UpstreamError
from upstream.fleet import UpstreamBytes, UpstreamResponse, UpstreamStream, get_fleet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key (from /v1) or a signed-in member (from the playground)."""

    workspace_id: int
    key: KeyInfo | None = None
    user_id: int | None = None
    source: str = "api"
    key_prefix: str = ""  # the key's first characters, as the Keys page shows them (logs)

    @property
    def limit_id(self) -> str:
        return f"key:{self.key.id}" if self.key else f"user:{self.user_id}:{self.workspace_id}"

    @property
    def rpm_limit(self) -> int:
        limit = self.key.rpm_limit if self.key else None
        return limit or settings.GATEWAY_DEFAULT_RPM

    @property
    def tpm_limit(self) -> int:
        limit = self.key.tpm_limit if self.key else None
        return limit or settings.GATEWAY_DEFAULT_TPM


def as_member(*, workspace_id: int, user_id: int) -> Caller:
    """A signed-in member, calling from the playground."""
    return Caller(workspace_id=workspace_id, user_id=user_id, source="playground")


def _secret_from(request: HttpRequest) -> str:
    # From META, not request.headers: that builds a dict of every header, on every call.
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise ApiError(
                401,
                "Use 'Authorization: Bearer <key>' or the x-api-key header.",
                code="invalid_auth",
            )
        return token.strip()
    return request.META.get("HTTP_X_API_KEY", "").strip()


async def authenticate(request: HttpRequest) -> Caller:
    """The caller behind `Authorization: Bearer` or `x-api-key`; 401 otherwise."""
    secret = _secret_from(request)
    if not secret:
        raise ApiError(401, "API key required", code="missing_api_key")
    info = await keys.lookup(secret)
    if info is None:
        raise ApiError(401, "Invalid API key", code="invalid_api_key")
    if not info.active:
        raise ApiError(401, "This API key has been revoked or disabled.", code="inactive_api_key")
    if info.expires_at and info.expires_at <= datetime.now(UTC):
        raise ApiError(401, "This API key has expired.", code="expired_api_key")
    return Caller(
        workspace_id=info.workspace_id,
        key=info,
        user_id=info.user_id,
        source="api",
        key_prefix=keys.display_prefix(secret),
    )


def authorize(caller: Caller, *, scope: str, model: str | None = None) -> None:
    """403 when the key may not use this product or model (members may use all)."""
    if caller.key is None:
        return
    if not caller.key.allows_scope(scope):
        raise ApiError(
            403, f"This API key is not allowed to use {scope}.", code="scope_not_allowed"
        )
    if model is not None and not caller.key.allows_model(model):
        allowed = ", ".join(caller.key.models)
        raise ApiError(
            403,
            f"This API key may not use the model {model}. Allowed: {allowed}.",
            code="model_not_allowed",
        )


def fault_headers(request: HttpRequest | None) -> dict[str, str] | None:
    """The simulator's `x-sim-*` fault headers, passed on only when the simulator is the upstream.

    They let a developer try their client's error handling against the built-in
    simulator; a real Mira node never sees them.
    """
    if request is None or not get_fleet().is_simulator:
        return None
    return {
        "x-sim-" + name[11:].lower().replace("_", "-"): value
        for name, value in request.META.items()
        if name.startswith("HTTP_X_SIM_")
    } or None


def _window() -> tuple[int, int]:
    now = int(time.time())
    return now // 60, 60 - now % 60


async def limit(caller: Caller, request: HttpRequest | None = None) -> None:
    """Count the call against the caller's requests- and tokens-per-minute; 429 when over."""
    minute, reset = _window()
    base = f"rl:{caller.limit_id}:{minute}"
    requests, tokens = await counter_add_and_get(f"{base}:r", 1, 61, f"{base}:t")
    rpm, tpm = caller.rpm_limit, caller.tpm_limit
    headers = {
        "x-ratelimit-limit-requests": str(rpm),
        "x-ratelimit-remaining-requests": str(max(0, rpm - requests)),
        "x-ratelimit-reset-requests": f"{reset}s",
        "x-ratelimit-limit-tokens": str(tpm),
        "x-ratelimit-remaining-tokens": str(max(0, tpm - tokens)),
        "x-ratelimit-reset-tokens": f"{reset}s",
    }
    if request is not None:
        request.rate_limit_headers = headers
    if requests > rpm:
        raise ApiError(
            429,
            f"Rate limit exceeded: {rpm} requests per minute for this key. Retry after {reset} seconds.",
            code="rate_limit_requests",
            headers=headers | {"Retry-After": str(reset)},
        )
    if tokens >= tpm:
        raise ApiError(
            429,
            f"Rate limit exceeded: {tpm} tokens per minute for this key. Retry after {reset} seconds.",
            code="rate_limit_tokens",
            headers=headers | {"Retry-After": str(reset)},
        )


@dataclass
class Call:
    """One model call on its way through the pipeline; `finish()` books it."""

    caller: Caller
    request_id: str
    product: str
    endpoint: str
    model: str = ""
    stream: bool = False
    model_asked: str = ""  # the name the caller asked for, when an alias served `model`
    started: float = field(default_factory=time.monotonic)
    # For the metrics (gateway.calllog): when the request came in, when the call first
    # went upstream, and when the upstream's answer (or a stream's first event) came.
    arrived: float = 0.0
    sent_at: float = 0.0
    answered_at: float = 0.0
    node: str = ""
    status: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    units: dict = field(default_factory=dict)
    ttft_ms: int | None = None
    error: str = ""
    variant: str = ""
    held: ledger.Held | None = None
    finished: bool = False
    upstream_headers: dict[str, str] | None = None

    async def __aenter__(self) -> "Call":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.finish()

    async def forward(
        self,
        path: str,
        body: dict | None = None,
        *,
        method: str = "POST",
        content: bytes | None = None,
        files: dict | None = None,
        data: dict | None = None,
    ) -> UpstreamResponse:
        """The upstream's complete answer through the fleet, its node and status noted;
        an upstream failure is raised as the caller's ApiError (see `failed`)."""
        self.sent_at = self.sent_at or time.monotonic()
        try:
            response = await get_fleet().request(
                method, path, json=body, content=content, files=files, data=data,
                model=self.model or None, headers=self.upstream_headers,
            )  # fmt: skip
        except UpstreamError as exc:
            raise self.failed(exc) from None
        self.node, self.status = response.node, response.status
        self.first_byte()
        return response

    async def download(self, url: str) -> bytes:
        """A file the call's node pointed to (a result's link); a failure is the caller's
        error, and what the call would have delivered is not counted."""
        try:
            return (await get_fleet().download(url, node=self.node)).content
        except UpstreamError as exc:
            error = self.failed(exc)
            self.units = {}
            raise error from None

    async def open_bytes(self, path: str, body: dict) -> UpstreamBytes:
        """An upstream answer of raw bytes (audio), opened: its status and headers have
        come. A failure up to then is raised as the caller's error, the call booked."""
        self.sent_at = self.sent_at or time.monotonic()
        stream = get_fleet().stream_bytes(
            "POST", path, json=body, model=self.model or None, headers=self.upstream_headers
        )
        try:
            await stream.__aenter__()
        except UpstreamError as exc:
            error = self.failed(exc)
            await self.finish()
            raise error from None
        except BaseException:
            self.status = 499
            await self.finish()
            raise
        self.node, self.status = stream.node, stream.status
        self.first_byte()
        return stream

    def open_stream(self, path: str, body: dict) -> UpstreamStream:
        """An upstream SSE stream for this call, not yet opened (see gateway.relay)."""
        self.sent_at = self.sent_at or time.monotonic()
        return get_fleet().stream(
            "POST", path, json=body, model=self.model or None, headers=self.upstream_headers
        )

    def first_byte(self) -> None:
        if self.ttft_ms is None:
            self.answered_at = now = time.monotonic()
            self.ttft_ms = int((now - self.started) * 1000)

    def failed(self, exc: UpstreamError) -> ApiError:
        """Record an upstream failure and turn it into the caller's error.

        A failure before the upstream's first byte costs the caller nothing: no token
        was delivered, so none is counted. After it, what was delivered is counted by
        the caller of this (the relay).
        """
        error = upstream_error(exc)
        self.status = error.status
        self.node = exc.node or self.node
        self.error = exc.detail[:255]
        if self.ttft_ms is None:
            self.tokens_in = self.tokens_out = 0
            self.units = {}
        return error

    async def finish(self, *, wait: bool = False) -> None:
        """Book the call (once), even when the caller has gone or the task is cancelled.

        The booking is written in the background (console.books); with `wait`, and
        always in the playground, which shows each call's cost as soon as it ends, this
        returns once it is written.
        """
        if self.finished:
            return
        wait = wait or self.caller.source != "api"
        self.finished = True
        key = self.caller.key
        fields = self._fields()
        done = books.book(
            books.Booking(
                fields=fields,
                held=self.held,
                variant=self.variant,
                key_budget=key.monthly_budget if key else None,
            ),
            wait=wait,
        )
        try:
            calllog.finished(self, fields)
        except Exception:  # a metric or a log line never stops a call
            logger.exception("could not count the call %s", self.request_id)
        tokens = self.tokens_in + self.tokens_out
        if tokens:
            minute, _ = _window()
            counting = counter_add_task(f"rl:{self.caller.limit_id}:{minute}:t", tokens, 61)
            if counting is not None:
                await asyncio.shield(counting)
        if done is not None:
            await asyncio.shield(asyncio.wrap_future(done))

    async def charged(self) -> int:
        """What the finished call was charged (once booked: the playground waits for it)."""
        return await usage.recorded_cost(self.request_id)

    def _fields(self) -> dict:
        """The usage record's fields."""
        caller = self.caller
        return {
            "request_id": self.request_id,
            "workspace_id": caller.workspace_id,
            "api_key_id": caller.key.id if caller.key else None,
            "user_id": caller.user_id,
            "source": caller.source,
            "product": self.product,
            "endpoint": self.endpoint,
            "model": self.model[:128],
            "model_asked": self.model_asked[:128],
            "node": self.node[:64],
            "status": self.status or 499,
            "stream": self.stream,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "units": self.units,
            "latency_ms": int((time.monotonic() - self.started) * 1000),
            "ttft_ms": self.ttft_ms,
            "error": self.error[:255],
            "created_at": timezone.now(),
        }


def upstream_error(exc: UpstreamError) -> ApiError:
    if exc.status == 429:
        headers = {"Retry-After": str(int(exc.retry_after or 1))}
        return ApiError(
            429,
            f"The upstream is busy: {exc.detail}",
            code="upstream_rate_limited",
            headers=headers,
        )
    if exc.status == 504:
        return ApiError(
            504, f"The upstream did not answer in time: {exc.detail}", code="upstream_timeout"
        )
    if exc.status in (502, 503) or exc.status >= 500:
        status = 503 if exc.status == 503 else 502
        return ApiError(status, f"The upstream failed: {exc.detail}", code="upstream_error")
    # A 4xx from the upstream is about the request: pass its detail on.
    return ApiError(
        exc.status if exc.status in (400, 404, 413, 422) else 400,
        exc.detail,
        code="upstream_rejected",
    )


async def start(
    caller: Caller,
    *,
    request_id: str,
    product: str,
    endpoint: str,
    model: str = "",
    stream: bool = False,
    request: HttpRequest | None = None,
    tokens_in: int = 0,
    max_tokens: int | None = None,
    choices: int = 1,
    units: dict | None = None,
    variant: str = "",
) -> Call:
    """Authorize, limit and reserve a call; from here on it must be finished.

    The worst-case cost (the prompt plus `max_tokens` for each of the `choices` the
    upstream writes, or the given units) is held against the balance and budgets first:
    402 before anything goes upstream.
    """
    authorize(caller, scope=product, model=model or None)
    await limit(caller, request)
    call = Call(
        caller=caller,
        request_id=request_id,
        product=product,
        endpoint=endpoint,
        model=model,
        stream=stream,
        model_asked=getattr(request, "model_asked", "") if model else "",
        tokens_in=tokens_in,
        units=units or {},
        variant=variant,
        upstream_headers=fault_headers(request),
    )
    call.arrived = getattr(request, "started", 0.0) or call.started
    if choices > 1:
        max_tokens = (max_tokens or settings.GATEWAY_DEFAULT_MAX_TOKENS) * choices
    call.held = await _hold(call, max_tokens)
    if request is not None:
        request.metered = True  # counted once finished (gateway.calllog), not as refused
    return call


def _worst_case(call: Call, max_tokens: int | None) -> int:
    amount = pricing.worst_case(call.product, call.model, call.tokens_in, max_tokens)
    if call.units:
        amount += cost_of(
            product=call.product,
            model=call.model,
            tokens_in=0,
            tokens_out=0,
            units=call.units,
            variant=call.variant,
        )
    return amount


async def _hold(call: Call, max_tokens: int | None) -> ledger.Held | None:
    """The call's worst case, held from this worker's lease without leaving the event
    loop when it can be, and on a database thread otherwise."""
    if pricing.fresh():
        amount = _worst_case(call, max_tokens)
        if amount <= 0:
            return None
        held = books.hold_now(**_hold_args(call, amount))
        if held is not None:
            return held
    return await db.run(_reserve, call, max_tokens)


def _hold_args(call: Call, amount: int) -> dict:
    key = call.caller.key
    return {
        "workspace_id": call.caller.workspace_id,
        "api_key_id": key.id if key else None,
        "key_budget": key.monthly_budget if key else None,
        "amount": amount,
        "request_id": call.request_id,
    }


def _reserve(call: Call, max_tokens: int | None) -> ledger.Held | None:
    """The call's hold, from the database if need be (on a database thread)."""
    amount = _worst_case(call, max_tokens)
    if amount <= 0:
        return None
    try:
        return books.hold(**_hold_args(call, amount))
    except ledger.PaymentRequired as exc:
        raise ApiError(402, str(exc), code="insufficient_balance") from None
