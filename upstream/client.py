"""One function per Mira endpoint, thin over `Fleet.request` and `Fleet.stream`.

JSON endpoints return the `UpstreamResponse` (`.json()`, `.node`, `.latency_ms`,
`.request_id`); binary ones return it too (`.content`, `.content_type`). Bodies are
passed through as given, except that a `provider/model` id is routed and sent bare.
Every failure raises `upstream.errors.UpstreamError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from upstream.fleet import Fleet, Timeouts, UpstreamResponse, UpstreamStream
from upstream.realtime import RealtimeSession, connect_realtime

Headers = Mapping[str, str] | None


def _model(body: Mapping[str, Any]) -> str | None:
    model = body.get("model")
    return model if isinstance(model, str) and model else None


async def list_models(fleet: Fleet, *, node: str | None = None) -> UpstreamResponse:
    return await fleet.request("GET", "/v1/models", node=node)


async def chat_completions(
    fleet: Fleet,
    body: Mapping[str, Any],
    *,
    headers: Headers = None,
    timeouts: Timeouts | None = None,
) -> UpstreamResponse:
    payload = {**body, "stream": False}
    return await fleet.request(
        "POST", "/v1/chat/completions", json=payload, model=_model(body), headers=headers,
        timeouts=timeouts,
    )  # fmt: skip


def stream_chat_completions(
    fleet: Fleet,
    body: Mapping[str, Any],
    *,
    headers: Headers = None,
    timeouts: Timeouts | None = None,
) -> UpstreamStream:
    """`async with stream_chat_completions(fleet, body) as s: async for chunk in s: ...`"""
    payload = {**body, "stream": True}
    return fleet.stream(
        "POST", "/v1/chat/completions", json=payload, model=_model(body), headers=headers,
        timeouts=timeouts,
    )  # fmt: skip


async def responses(
    fleet: Fleet,
    body: Mapping[str, Any],
    *,
    headers: Headers = None,
    timeouts: Timeouts | None = None,
) -> UpstreamResponse:
    payload = {**body, "stream": False}
    return await fleet.request(
        "POST", "/v1/responses", json=payload, model=_model(body), headers=headers,
        timeouts=timeouts,
    )  # fmt: skip


def stream_responses(
    fleet: Fleet,
    body: Mapping[str, Any],
    *,
    headers: Headers = None,
    timeouts: Timeouts | None = None,
) -> UpstreamStream:
    payload = {**body, "stream": True}
    return fleet.stream(
        "POST", "/v1/responses", json=payload, model=_model(body), headers=headers,
        timeouts=timeouts,
    )  # fmt: skip


async def embeddings(
    fleet: Fleet, body: Mapping[str, Any], *, headers: Headers = None
) -> UpstreamResponse:
    return await fleet.request(
        "POST", "/v1/embeddings", json=dict(body), model=_model(body), headers=headers
    )


async def token_count(fleet: Fleet, body: Mapping[str, Any]) -> UpstreamResponse:
    return await fleet.request(
        "POST", "/v1/extras/token-count", json=dict(body), model=_model(body)
    )


async def images_generate(
    fleet: Fleet, body: Mapping[str, Any], *, headers: Headers = None
) -> UpstreamResponse:
    return await fleet.request(
        "POST", "/v1/images/generate", json=dict(body), model=_model(body), headers=headers
    )


async def images_edit(
    fleet: Fleet,
    body: Mapping[str, Any],
    *,
    image: bytes | None = None,
    filename: str = "image.png",
    content_type: str = "image/png",
    headers: Headers = None,
) -> UpstreamResponse:
    """Edit an image: JSON with `image` as a data URI, or multipart when `image` bytes are given."""
    if image is None:
        return await fleet.request(
            "POST", "/v1/images/edit", json=dict(body), model=_model(body), headers=headers
        )
    fields = {k: str(v) for k, v in body.items() if v is not None}
    return await fleet.request(
        "POST",
        "/v1/images/edit",
        data=fields,
        files={"image": (filename, image, content_type)},
        model=_model(body),
        headers=headers,
    )


async def speech(
    fleet: Fleet, body: Mapping[str, Any], *, headers: Headers = None
) -> UpstreamResponse:
    """Text to speech; the audio is `.content`, its type `.content_type`."""
    return await fleet.request("POST", "/v1/audio/speech", json=dict(body), headers=headers)


async def transcribe(
    fleet: Fleet,
    audio: bytes,
    *,
    filename: str = "audio.wav",
    content_type: str = "audio/wav",
    language: str | None = None,
    model: str | None = None,
    headers: Headers = None,
) -> UpstreamResponse:
    fields = {k: v for k, v in (("language", language), ("model", model)) if v}
    return await fleet.request(
        "POST",
        "/v1/audio/transcribe",
        data=fields,
        files={"file": (filename, audio, content_type)},
        headers=headers,
    )


async def voices(fleet: Fleet) -> UpstreamResponse:
    return await fleet.request("GET", "/v1/audio/voices")


async def music_submit(
    fleet: Fleet, body: Mapping[str, Any], *, headers: Headers = None
) -> UpstreamResponse:
    """Start a music job; keep `.node`, later polls must go to the same node."""
    return await fleet.request("POST", "/v1/audio/music", json=dict(body), headers=headers)


async def music_poll(fleet: Fleet, job_id: str, *, node: str) -> UpstreamResponse:
    return await fleet.request("GET", f"/v1/audio/music/{job_id}", node=node)


async def video_submit(
    fleet: Fleet, body: Mapping[str, Any], *, headers: Headers = None
) -> UpstreamResponse:
    """Start a video job; keep `.node`, later polls must go to the same node."""
    return await fleet.request("POST", "/v1/video/generate", json=dict(body), headers=headers)


async def video_poll(fleet: Fleet, job_id: str, *, node: str) -> UpstreamResponse:
    return await fleet.request("GET", f"/v1/video/jobs/{job_id}", node=node)


async def download(fleet: Fleet, url: str, *, node: str) -> UpstreamResponse:
    """A finished job's file (its `audio_url` or `video_url`)."""
    return await fleet.download(url, node=node)


async def vision_locate(
    fleet: Fleet, body: Mapping[str, Any], *, headers: Headers = None
) -> UpstreamResponse:
    return await fleet.request("POST", "/v1/vision/locate", json=dict(body), headers=headers)


async def realtime_preflight(fleet: Fleet, *, node: str | None = None) -> UpstreamResponse:
    return await fleet.request("GET", "/v1/realtime/preflight", node=node)


async def realtime_connect(
    fleet: Fleet,
    *,
    model: str | None = None,
    node: str | None = None,
    auth: str = "bearer",
    timeouts: Timeouts | None = None,
) -> RealtimeSession:
    """Open a realtime session; use `async with await realtime_connect(fleet) as session:`."""
    return await connect_realtime(fleet, model=model, node=node, auth=auth, timeouts=timeouts)
