"""`POST /v1/audio/speech`, `POST /v1/audio/transcribe`, `GET /v1/audio/voices`."""

from __future__ import annotations

import asyncio
from typing import Any

from upstream.simulator import audio, fields
from upstream.simulator.web import ApiError, Request, Response, decode_data_uri, json_response

SPEECH_FORMATS = ("mp3", "wav", "pcm")
MAX_SPEECH_CHARACTERS = 4096
_EXTENSION_TYPES = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "pcm": "audio/pcm",
    "webm": "audio/webm",
    "ogg": "audio/ogg",
    "m4a": "audio/mp4",
}


async def voices(sim: Any, request: Request) -> Response:
    return json_response({"object": "list", "data": [v.as_json() for v in audio.VOICES]})


async def speech(sim: Any, request: Request) -> Response:
    body = request.json()
    name = "text" if "text" in body and "input" not in body else "input"
    text = fields.required(body, name)
    if not isinstance(text, str):
        raise ApiError(400, f"The '{name}' field must be a string.")
    if len(text) > MAX_SPEECH_CHARACTERS:
        raise ApiError(
            400, f"The '{name}' field allows at most {MAX_SPEECH_CHARACTERS} characters."
        )
    voice_id = fields.string(body, "voice", "aria") or "aria"
    if voice_id not in audio.VOICE_IDS:
        raise ApiError(400, f"Unknown voice '{voice_id}'. Available: {', '.join(audio.VOICE_IDS)}.")
    default_format = "mp3" if sim.settings.use_ffmpeg else "wav"
    response_format = fields.choice(body, "response_format", SPEECH_FORMATS, default_format)
    speed = fields.number(body, "speed", 0.25, 4.0, 1.0) or 1.0
    espeak, ffmpeg = sim.settings.use_espeak, sim.settings.use_ffmpeg

    def render() -> tuple[bytes, str, float]:
        pcm = audio.synthesize(text, voice_id, speed, espeak=espeak)
        data, content_type = audio.encode(pcm, response_format, text, ffmpeg=ffmpeg)
        return data, content_type, len(pcm) / (2 * audio.RATE)

    data, content_type, seconds = await asyncio.to_thread(render)
    headers = {"X-Audio-Duration": f"{seconds:.3f}", "X-Audio-Characters": str(len(text))}
    if content_type == "audio/pcm":
        headers["X-Audio-Sample-Rate"] = str(audio.RATE)
    return Response(data, 200, content_type, headers)


async def transcribe(sim: Any, request: Request) -> Response:
    language = None
    response_format = "json"
    if request.content_type == "multipart/form-data":
        form = request.form()
        upload = form.files.get("file") or form.files.get("audio")
        if upload is None:
            raise ApiError(400, "The 'file' field is required.")
        data = upload.data
        extension = upload.filename.rsplit(".", 1)[-1].lower() if "." in upload.filename else ""
        content_type = _EXTENSION_TYPES.get(extension, upload.content_type)
        language = form.fields.get("language") or None
        response_format = form.fields.get("response_format") or "json"
    elif request.content_type == "application/json":
        body = request.json()
        value = fields.required(body, "audio")
        if not isinstance(value, str):
            raise ApiError(400, "The 'audio' field must be a data: URI.")
        content_type, data = decode_data_uri(value, "audio")
        language = fields.string(body, "language")
        response_format = fields.string(body, "response_format", "json") or "json"
    else:
        data, content_type = request.body, request.content_type
    if not data:
        raise ApiError(400, "No audio data provided.")
    if response_format not in ("json", "text", "verbose_json"):
        raise ApiError(400, "The 'response_format' field must be one of: json, text, verbose_json.")

    def listen() -> tuple[str, float | None]:
        seconds = audio.duration(data, content_type)
        text = audio.embedded_text(data)
        if text is None and content_type == "audio/pcm":
            text = audio.SPEECH_MEMORY.recall(data)
        if text is None:
            text = audio.recognize(data, content_type)
        return (text if text is not None else audio.describe(seconds, content_type)), seconds

    text, seconds = await asyncio.to_thread(listen)
    if language is None:
        language = "ru" if audio.is_russian(text) else "en"
    if response_format == "text":
        return Response(text.encode(), 200, "text/plain; charset=utf-8")
    rounded = round(seconds, 3) if seconds is not None else None
    return json_response({"text": text, "language": language, "duration": rounded})
