"""The client for Mira-compatible upstream nodes: HTTP, SSE, WebSocket, and the fleet.

This package speaks the wire protocol only and imports no Django app. It is the
only place that imports an HTTP client (aiohttp) or a WebSocket client.

The fleet (`upstream.fleet`)::

    fleet = get_fleet()              # process-wide, from os.environ; usable from any loop
    fleet = Fleet.from_env(environ)  # MIRA_FLEET_FILE | MIRA_API_BASE+MIRA_API_KEY | simulator
    fleet.is_simulator               # True when the built-in simulator is the upstream
    fleet.state() -> list[dict]      # name, base_url, healthy, outstanding, p50_ms,
                                     # recent_errors, last_error, ... (never a key)
    fleet.resolve_model("provider/model") -> ModelRef(provider, name)

    resp = await fleet.request(method, path, *, json=None, content=None, files=None,
                               data=None, params=None, headers=None, model=None,
                               node=None, timeouts=None) -> UpstreamResponse
        # resp.status, .headers, .content, .json(), .content_type, .request_id,
        # .node, .latency_ms, .attempts

    async with fleet.stream(method, path, *, json, model=None, headers=None,
                            node=None, timeouts=None) as s:
        s.node, s.status, s.headers, s.request_id, s.first_chunk_ms
        async for chunk in s:        # dicts parsed from `data:` lines, until [DONE]
            ...
        s.done                       # True when [DONE] arrived; s.chunks counts chunks

    await fleet.download(url, *, node) -> UpstreamResponse   # a job's file
    await fleet.probe() -> {node: ok}                         # readmit ejected nodes now
    Timeouts(connect, first_byte, idle, total, write)         # per call, seconds

Paths carry the version (`/v1/chat/completions`; a path without one gets `/v1`).
`model` routes the call: `provider/model` goes to nodes whose name or `provider`
matches (and the bare model is sent when the body's "model" is that id); nodes
with a `models` list only get those models. `node` pins a call to one node (job
polls). Retries: 429/500/502/503/504, connection errors and timeouts, on another
node when there is one, with backoff honouring Retry-After; a stream is never
retried after its first chunk reached the caller.

Typed helpers (`upstream.client`), thin over the above: `list_models`,
`chat_completions`, `stream_chat_completions`, `responses`, `stream_responses`,
`embeddings`, `token_count`, `images_generate`, `images_edit`, `speech`,
`transcribe`, `voices`, `music_submit`/`music_poll`, `video_submit`/`video_poll`,
`download`, `vision_locate`, `realtime_preflight`, and `realtime_connect` which
returns a `RealtimeSession` (`send(event)`, `recv()`, `async for`, `close()`).

Errors: every failure is `upstream.errors.UpstreamError` with `status` (upstream
status; 502 for connection errors and resets, 504 for timeouts), `retry_after`,
`node`, `detail` and `message`; neither ever contains a node's key.

Tokens: `upstream.tokens.count_tokens(text)`, the estimate the simulator bills with.

The simulator (`upstream.simulator`) is a whole Mira node in one ASGI app; see its
docstring for the `reply with:` marker and the `x-sim-*` fault headers.
"""

from upstream.errors import UpstreamError
from upstream.fleet import (
    Fleet,
    FleetOptions,
    Timeouts,
    UpstreamResponse,
    UpstreamStream,
    get_fleet,
    set_fleet,
)
from upstream.nodes import ModelRef, NodeConfig, parse_model
from upstream.tokens import count_tokens

__all__ = [
    "Fleet",
    "FleetOptions",
    "ModelRef",
    "NodeConfig",
    "Timeouts",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamStream",
    "count_tokens",
    "get_fleet",
    "parse_model",
    "set_fleet",
]
