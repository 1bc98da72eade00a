"""The simulator's ASGI application: routing, auth, faults, streaming and counters."""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from typing import Any

from upstream import sse
from upstream.simulator import chat, embeddings, images, jobs, realtime, vision, voice
from upstream.simulator.settings import SimulatorSettings, SimulatorStats
from upstream.simulator.web import (
    ApiError,
    Request,
    Response,
    Router,
    StreamingResponse,
    json_response,
)

logger = logging.getLogger(__name__)

KEY_PREFIX = "sk-mira-"
STATUS_DETAILS = {
    400: "Bad request.",
    401: "Invalid API key",
    402: "Insufficient balance. Please top up your account.",
    403: "Your plan does not include access to this model.",
    404: "Resource not found",
    429: "Rate limit exceeded, retry after {retry} seconds",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Server is at capacity, please try again later",
    504: "Gateway timeout",
}


class SimulatedReset(Exception):
    """Raised inside a response to make the server drop the connection (a fault)."""


class _ResetFilter(logging.Filter):
    """Keep deliberate faults out of the server's error log.

    uvicorn also reports a WebSocket handshake refused with an HTTP response (the
    ASGI `websocket.http.response` extension) as "returned without completing
    handshake", though the response was sent.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], SimulatedReset):
            return False
        return record.getMessage() != "ASGI callable returned without completing handshake."


def _quiet_resets() -> None:
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _ResetFilter) for f in server_log.filters):
        server_log.addFilter(_ResetFilter())


class Faults:
    """The faults one request asked for with `x-sim-*` headers (see the package docstring)."""

    def __init__(self, headers: dict[str, str]) -> None:
        def number(name: str) -> float | None:
            value = headers.get(name)
            try:
                return float(value) if value not in (None, "") else None
            except ValueError:
                raise ApiError(400, f"The '{name}' header must be a number.") from None

        status = number("x-sim-status")
        self.status = int(status) if status is not None else None
        self.retry_after = number("x-sim-retry-after")
        self.detail = headers.get("x-sim-detail")
        self.latency_ms = number("x-sim-latency-ms")
        self.chunk_delay_ms = number("x-sim-chunk-delay-ms")
        reset = number("x-sim-reset-after-chunks")
        self.reset_after = int(reset) if reset is not None else None
        hang_after = number("x-sim-hang-after-chunks")
        self.hang_after = int(hang_after) if hang_after is not None else None
        self.hang = headers.get("x-sim-hang", "").lower() in ("1", "true", "yes")
        error_after = number("x-sim-error-after-chunks")
        self.error_after = int(error_after) if error_after is not None else None

    @property
    def any(self) -> bool:
        return (
            any(
                v is not None
                for v in (self.status, self.reset_after, self.hang_after, self.error_after)
            )
            or self.hang
        )


class Disconnect:
    """Watches `receive()` for the client going away while we answer."""

    def __init__(self, receive: Any) -> None:
        self.event = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.event.set()
                return

    async def wait(self, seconds: float | None) -> bool:
        """Sleep (forever when None); True when the client disconnected meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                await self.event.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise


class Simulator:
    """A Mira node in one ASGI application. See the `upstream.simulator` docstring."""

    def __init__(self, settings: SimulatorSettings | None = None) -> None:
        self.settings = settings or SimulatorSettings()
        self.stats = SimulatorStats()
        self.jobs = jobs.JobStore()
        # Responses kept for `previous_response_id`, oldest first (see chat.responses).
        self.stored_responses: dict[str, list] = {}
        self.router = Router()
        _quiet_resets()
        add = self.router.add
        add("GET", "/v1/models", embeddings.list_models, auth="optional")
        add("GET", "/v1/models/{model}", embeddings.get_model, auth="optional")
        add("POST", "/v1/chat/completions", chat.chat_completions)
        add("POST", "/v1/responses", chat.responses)
        add("POST", "/v1/embeddings", embeddings.embeddings)
        add("POST", "/v1/extras/token-count", embeddings.token_count)
        add("POST", "/v1/images/generate", images.generate)
        add("POST", "/v1/images/generations", images.generate)
        add("POST", "/v1/images/edit", images.edit)
        add("POST", "/v1/images/edits", images.edit)
        add("POST", "/v1/audio/speech", voice.speech)
        add("POST", "/v1/audio/transcribe", voice.transcribe)
        add("POST", "/v1/audio/transcriptions", voice.transcribe)
        add("GET", "/v1/audio/voices", voice.voices)
        add("POST", "/v1/audio/music", jobs.music_submit)
        add("GET", "/v1/audio/music/{job_id}", jobs.music_get)
        add("POST", "/v1/video/generate", jobs.video_submit)
        add("GET", "/v1/video/jobs/{job_id}", jobs.video_get)
        add("GET", "/v1/video/{job_id}", jobs.video_get)
        add("DELETE", "/v1/audio/music/{job_id}", jobs.cancel)
        add("DELETE", "/v1/video/jobs/{job_id}", jobs.cancel)
        add("DELETE", "/v1/video/{job_id}", jobs.cancel)
        add("POST", "/v1/vision/locate", vision.locate)
        add("GET", "/v1/realtime/preflight", realtime.preflight)
        add("GET", "/files/{name}", jobs.file_get, auth="none")
        add("GET", "/_sim/stats", Simulator._stats, auth="none")
        add("POST", "/_sim/stats/reset", Simulator._reset_stats, auth="none")
        add("GET", "/_sim/config", Simulator._config, auth="none")
        add("POST", "/_sim/config", Simulator._configure, auth="none")

    # --- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            if scope["path"] == "/v1/realtime":
                await realtime.serve(self, scope, receive, send)
            else:
                await receive()
                await send({"type": "websocket.close", "code": 1008, "reason": "Not found"})
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        stats = self.stats
        stats.requests += 1
        stats.open_requests += 1
        request_id = str(uuid.uuid4())
        route_name = "unknown"
        faults: Faults | None = None
        try:
            body, too_large = await self._read_body(receive)
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            request = Request(scope, body, headers)
            try:
                route, request.path_params = self.router.match(scope["method"], scope["path"])
                route_name = f"{route.method} {route.name}"
                if too_large:
                    raise ApiError(413, "Request body too large")
                faults = Faults(headers) if route.auth != "none" else None
                if faults is not None:
                    await self._before(faults, receive, send, request_id)
                    if faults.hang:
                        return
                if route.auth != "none":
                    self._authenticate(headers, optional=route.auth == "optional")
                result = await route.handler(self, request)
            except ApiError as error:
                result = json_response({"detail": error.detail}, error.status, error.headers)
            except SimulatedReset:
                raise
            except Exception:
                logger.exception("The simulator failed on %s %s", scope["method"], scope["path"])
                result = json_response({"detail": "Internal server error"}, 500)
            stats.by_route[route_name] += 1
            stats.by_status[result.status] += 1
            if isinstance(result, StreamingResponse):
                await self._stream(result, faults, receive, send, request_id)
            else:
                await self._respond(result, send, request_id, scope["method"], faults)
        finally:
            stats.open_requests -= 1

    async def _read_body(self, receive: Any) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        size = 0
        too_large = False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.settings.max_body_bytes:
                parts.append(chunk)
            else:
                too_large = True
            if not message.get("more_body"):
                break
        return b"".join(parts), too_large

    def _authenticate(self, headers: dict[str, str], *, optional: bool = False) -> None:
        problem = self._key_problem(headers.get("authorization"))
        if problem is None or (optional and not headers.get("authorization")):
            return
        raise ApiError(401, problem)

    def _key_problem(self, authorization: str | None, key: str | None = None) -> str | None:
        if key is None:
            if not authorization or not authorization.startswith("Bearer "):
                return "API key required"
            key = authorization[len("Bearer ") :]
        if not key:
            return "API key required"
        if not key.startswith(KEY_PREFIX) or len(key) <= len(KEY_PREFIX):
            return "Invalid API key"
        if self.settings.key is not None and not hmac.compare_digest(
            key.encode(), self.settings.key.encode()
        ):
            return "Invalid API key"
        return None

    def websocket_rejection(
        self, headers: dict[str, str], protocol_key: str | None
    ) -> tuple[int, str] | None:
        """Why a realtime handshake is refused (status, detail), or None."""
        if self.settings.fail_status:
            return self.settings.fail_status, STATUS_DETAILS.get(self.settings.fail_status, "Error")
        if protocol_key is not None:
            problem = self._key_problem(None, protocol_key)
        else:
            problem = self._key_problem(headers.get("authorization"))
        return (401, problem) if problem else None

    async def _before(self, faults: Faults, receive: Any, send: Any, request_id: str) -> None:
        """Apply latency, hangs and injected statuses before the handler runs."""
        latency = faults.latency_ms if faults.latency_ms is not None else self.settings.latency_ms
        if faults.hang or latency:
            watcher = Disconnect(receive)
            try:
                if faults.hang:
                    self.stats.faults_injected += 1
                    await watcher.wait(None)
                    return
                if await watcher.wait(latency / 1000):
                    faults.hang = True
                    return
            finally:
                await watcher.stop()
        status = faults.status or self.settings.fail_status
        if status:
            retry = faults.retry_after
            if retry is None and faults.status is None:
                retry = self.settings.fail_retry_after
            if retry is None and status == 429:
                retry = 1
            detail = faults.detail or STATUS_DETAILS.get(status, "Simulated failure").format(
                retry=f"{retry:g}" if retry is not None else "1"
            )
            extra = {"Retry-After": f"{retry:g}"} if retry is not None else {}
            self.stats.faults_injected += 1
            raise ApiError(status, detail, extra)
        if faults.reset_after == 0:
            self.stats.faults_injected += 1
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"100"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b'{"partial":', "more_body": True})
            raise SimulatedReset()

    def _headers(self, extra: dict[str, str], content_type: str, request_id: str) -> list[Any]:
        headers = [(b"content-type", content_type.encode()), (b"x-request-id", request_id.encode())]
        headers += [(k.lower().encode(), str(v).encode()) for k, v in extra.items()]
        return headers

    async def _respond(
        self, result: Response, send: Any, request_id: str, method: str, faults: Faults | None
    ) -> None:
        headers = self._headers(result.headers, result.content_type, request_id)
        if "Content-Length" not in result.headers:
            headers.append((b"content-length", str(len(result.body)).encode()))
        await send({"type": "http.response.start", "status": result.status, "headers": headers})
        body = b"" if method == "HEAD" else result.body
        await send({"type": "http.response.body", "body": body})

    async def _stream(
        self,
        result: StreamingResponse,
        faults: Faults | None,
        receive: Any,
        send: Any,
        request_id: str,
    ) -> None:
        stats = self.stats
        stats.streams_started += 1
        stats.open_streams += 1
        headers = self._headers(
            {"Cache-Control": "no-cache", **result.headers}, result.content_type, request_id
        )
        watcher = Disconnect(receive)
        pieces = result.pieces
        outcome = "completed"

        async def produce() -> None:
            nonlocal outcome
            await send({"type": "http.response.start", "status": result.status, "headers": headers})
            delay_ms = self.settings.chunk_delay_ms
            if faults is not None and faults.chunk_delay_ms is not None:
                delay_ms = faults.chunk_delay_ms
            sent = 0
            async for piece in pieces:
                if faults is not None:
                    if faults.reset_after is not None and sent >= faults.reset_after:
                        outcome = "reset"
                        raise SimulatedReset()
                    if faults.hang_after is not None and sent >= faults.hang_after:
                        await asyncio.Event().wait()
                    if faults.error_after is not None and sent >= faults.error_after:
                        error = {
                            "error": {
                                "message": "Server is at capacity, please try again later",
                                "type": "server_error",
                                "code": "queue_full",
                            }
                        }
                        body = sse.encode(error)
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                        break
                if sent and delay_ms:
                    await asyncio.sleep(delay_ms / 1000)
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                sent += 1
            await send({"type": "http.response.body", "body": b""})

        producer = asyncio.get_running_loop().create_task(produce())
        disconnected = asyncio.get_running_loop().create_task(watcher.event.wait())
        try:
            done, _ = await asyncio.wait(
                {producer, disconnected}, return_when=asyncio.FIRST_COMPLETED
            )
            if producer not in done:
                outcome = "cancelled"
                producer.cancel()
            try:
                await producer
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
            except (OSError, RuntimeError) as exc:
                if isinstance(exc, SimulatedReset):
                    raise
                outcome = "cancelled"
        finally:
            disconnected.cancel()
            await watcher.stop()
            await pieces.aclose()  # type: ignore[attr-defined]
            stats.open_streams -= 1
            if outcome == "completed":
                stats.streams_completed += 1
            elif outcome == "cancelled":
                stats.streams_cancelled += 1
            else:
                stats.streams_reset += 1
                stats.faults_injected += 1

    # --- control endpoints for tests ------------------------------------------------------

    async def _stats(self, request: Request) -> Response:
        return json_response(self.stats.snapshot())

    async def _reset_stats(self, request: Request) -> Response:
        self.stats.reset()
        return json_response(self.stats.snapshot())

    async def _config(self, request: Request) -> Response:
        return json_response(self.settings.public())

    async def _configure(self, request: Request) -> Response:
        changes = request.json()
        for name, value in changes.items():
            if name not in SimulatorSettings.ADJUSTABLE:
                raise ApiError(400, f"The '{name}' setting cannot be changed.")
            if not _valid_setting(name, value):
                raise ApiError(400, f"The '{name}' setting has the wrong type.")
        for name, value in changes.items():
            setattr(self.settings, name, value)
        return json_response(self.settings.public())


def _valid_setting(name: str, value: Any) -> bool:
    if name.startswith("use_"):
        return isinstance(value, bool)
    if value is None:
        return name.startswith("fail_")
    return isinstance(value, int | float) and not isinstance(value, bool)


def create_app(settings: SimulatorSettings | None = None) -> Simulator:
    return Simulator(settings)
