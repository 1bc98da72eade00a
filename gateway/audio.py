"""Voice: `POST /v1/audio/speech` (and seed 003's `POST /v1/speech`), `POST
/v1/audio/transcribe` (and OpenAI's `POST /v1/audio/transcriptions`, what the SDKs'
`audio.transcriptions.create` calls) and `GET /v1/audio/voices`.

Speech is held and charged per character of its input, whitespace counted; the audio
is relayed to the caller piece by piece as the upstream sends it, and kept in the
console's storage once complete (its file id is in the `x-file-id` header from the
start; a speech the caller left before its end is charged but not kept).
Transcription is held and charged per second of audio, measured from the uploaded
file itself before anything goes upstream (WAV with the standard library, other
containers with ffprobe): a file whose duration cannot be measured is refused rather
than transcribed for nothing. The upload is never held in
memory whole: the body is a spooled file, the multipart parser writes a large file to
disk, and the fleet sends it upstream from there in chunks.
"""

import asyncio
import logging
import math
import shutil
import subprocess
import tempfile
import wave
from collections.abc import AsyncIterator
from typing import Literal

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.multipartparser import MultiPartParserError
from pydantic import BaseModel, ConfigDict, Field

from gateway import media, pipeline
from gateway.errors import ApiError, too_large
from gateway.http import (
    MODEL_CALL_ERRORS,
    UPSTREAM_ERRORS,
    Operation,
    endpoint,
    json_body,
    validate,
)
from gateway.models import Purpose, new_file_id
from upstream.errors import UpstreamError
from upstream.fleet import UpstreamBytes, get_fleet

logger = logging.getLogger(__name__)

SPEECH_PATH = "/v1/audio/speech"
SHORTCUT_PATH = "/v1/speech"
TRANSCRIBE_PATH = "/v1/audio/transcribe"
OPENAI_TRANSCRIBE_PATH = "/v1/audio/transcriptions"
VOICES_PATH = "/v1/audio/voices"
MAX_SPEECH_CHARACTERS = 4096
DEFAULT_VOICE = "aria"
# What an uploaded file's first bytes may say it is (gateway.media.sniff, plus FLAC).
AUDIO_TYPES = {
    "audio/wav": "wav",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "video/webm": "webm",
    "video/mp4": "m4a",
}
# Relays being closed in the background: the loop keeps only weak references to tasks.
_closing: set[asyncio.Task] = set()
SPEECH_TYPES = {"audio/mpeg", "audio/wav", "audio/pcm", "audio/ogg", "audio/opus"}


class SpeechRequest(BaseModel):
    """`input` (OpenAI) or `text` (seed 003) is required."""

    model_config = ConfigDict(extra="ignore", strict=True)

    input: str | None = Field(default=None, min_length=1, max_length=MAX_SPEECH_CHARACTERS)
    text: str | None = Field(default=None, min_length=1, max_length=MAX_SPEECH_CHARACTERS)
    voice: str = Field(default=DEFAULT_VOICE, min_length=1, max_length=64)
    model: str | None = Field(default=None, min_length=1, max_length=128)
    response_format: Literal["mp3", "wav", "pcm", "opus"] = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)


class TranscriptionForm(BaseModel):
    """The multipart form's fields: the audio as `file` (OpenAI) or `audio` (Mira)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    file: bytes | None = Field(default=None, description="The audio file (or send it as `audio`).")
    audio: bytes | None = Field(default=None, description="Same as `file`.")
    language: str | None = Field(default=None, min_length=2, max_length=16)
    model: str | None = Field(default=None, min_length=1, max_length=128)
    response_format: Literal["json", "text", "verbose_json"] = "json"


# --- speech ----------------------------------------------------------------------------


def _speech(body: dict) -> tuple[SpeechRequest, dict]:
    """The checked request and the body sent upstream."""
    spec = validate(SpeechRequest, body)
    text = spec.input if spec.input is not None else spec.text
    if text is None:
        raise ApiError(400, "The 'input' field is required.", code="invalid_request")
    upstream_body: dict = {
        "input": text,
        "voice": spec.voice,
        "response_format": spec.response_format,
        "speed": spec.speed,
    }
    if spec.model:
        upstream_body["model"] = spec.model
    return spec, upstream_body


async def _start_speech(
    caller: pipeline.Caller, spec: SpeechRequest, upstream_body: dict, *, request_id: str,
    request: HttpRequest | None, endpoint: str,
) -> pipeline.Call:  # fmt: skip
    return await pipeline.start(
        caller, request_id=request_id, product="audio", endpoint=endpoint,
        model=spec.model or "", request=request,
        units={"speech_character": len(upstream_body["input"])},
    )  # fmt: skip


def _not_audio(call: pipeline.Call) -> ApiError:
    call.status, call.error, call.units = 502, "Unusable upstream speech answer", {}
    return ApiError(502, "The upstream's answer was not audio.", code="upstream_error")


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


async def speak(
    caller: pipeline.Caller,
    body: dict,
    *,
    request_id: str,
    request: HttpRequest | None = None,
    endpoint: str = SPEECH_PATH,
) -> tuple[tuple[bytes, str, str], pipeline.Call]:
    """Speak `body`'s text, held and charged per character; ((the complete audio, its
    content type, the id of the file it is kept as), the booked call)."""
    spec, upstream_body = _speech(body)
    call = await _start_speech(
        caller, spec, upstream_body, request_id=request_id, request=request, endpoint=endpoint
    )
    async with call:
        response = await call.forward(SPEECH_PATH, upstream_body)
        content_type = _media_type(response.content_type)
        if not response.content or content_type not in SPEECH_TYPES:
            raise _not_audio(call)
        file = await media.keep(
            workspace_id=caller.workspace_id, data=response.content, content_type=content_type,
            purpose=Purpose.AUDIO, request_id=request_id,
        )  # fmt: skip
    return (response.content, content_type, file.id), call


class SpeechRelay:
    """The upstream's audio, relayed to the caller piece by piece as it arrives, kept as
    a file once complete, and the call booked exactly once: at the end, when the upstream
    fails, and when the caller leaves (or the response is closed before it was read)."""

    def __init__(self, call: pipeline.Call, stream: UpstreamBytes, content_type: str) -> None:
        self.call = call
        self.stream = stream
        self.content_type = content_type
        self.file_id = new_file_id()
        self.loop = asyncio.get_running_loop()
        self.closed = False

    async def pieces(self) -> AsyncIterator[bytes]:
        call = self.call
        call.status = 499  # until the audio is complete, the caller may still leave
        received = []
        try:
            async for piece in self.stream:
                received.append(piece)
                yield piece
            data = b"".join(received)
            if not data:
                raise _not_audio(call)
            await media.keep(
                workspace_id=call.caller.workspace_id, data=data, content_type=self.content_type,
                purpose=Purpose.AUDIO, request_id=call.request_id, file_id=self.file_id,
            )  # fmt: skip
            call.status = 200
        except UpstreamError as exc:
            call.failed(exc)
            logger.warning("upstream failed mid-speech for %s: %s", call.request_id, exc)
            raise
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the upstream answer and book the call (once)."""
        if self.closed:
            return
        self.closed = True
        try:
            await asyncio.shield(self.stream.__aexit__(None, None, None))
        finally:
            await self.call.finish()

    def close_soon(self) -> None:
        """When the response is closed: a no-op after the audio was sent, else the close."""
        if self.closed:
            return
        task = self.loop.create_task(self.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    def response(self) -> StreamingHttpResponse:
        response = StreamingHttpResponse(self.pieces(), content_type=self.content_type)
        response["x-file-id"] = self.file_id
        response._resource_closers.append(self.close_soon)
        return response


async def speak_streamed(
    caller: pipeline.Caller, body: dict, *, request_id: str, request: HttpRequest | None = None,
    endpoint: str = SPEECH_PATH,
) -> SpeechRelay:  # fmt: skip
    """Speak `body`'s text as a relay of the upstream's audio; an upstream failure before
    its answer starts is the caller's error, and the call is booked either way."""
    spec, upstream_body = _speech(body)
    call = await _start_speech(
        caller, spec, upstream_body, request_id=request_id, request=request, endpoint=endpoint
    )
    stream = await call.open_bytes(SPEECH_PATH, upstream_body)
    content_type = _media_type(stream.content_type)
    if content_type not in SPEECH_TYPES:
        error = _not_audio(call)
        await asyncio.shield(stream.__aexit__(None, None, None))
        await call.finish()
        raise error
    return SpeechRelay(call, stream, content_type)


@endpoint("POST")
async def speech_view(request: HttpRequest) -> HttpResponse:
    relay = await speak_streamed(
        request.caller, json_body(request), request_id=request.request_id, request=request,
        endpoint=request.path,
    )  # fmt: skip
    return relay.response()


# --- transcription ---------------------------------------------------------------------


def audio_type(head: bytes) -> str | None:
    """The audio container the file's first bytes say it is, if one that is accepted."""
    if head.startswith(b"fLaC"):
        return "audio/flac"
    kind = media.sniff(head)
    return kind if kind in AUDIO_TYPES else None


def _wav_seconds(upload: UploadedFile) -> float | None:
    upload.seek(0)
    try:
        with wave.open(upload.file, "rb") as reader:
            frames, rate = reader.getnframes(), reader.getframerate()
            width = reader.getsampwidth() * reader.getnchannels()
    except (wave.Error, EOFError, ValueError):
        return None
    finally:
        upload.seek(0)
    if not rate or not width:
        return None
    # A header that claims more frames than the file holds is not believed.
    return min(frames, upload.size // width) / rate


def _probe_seconds(path: str) -> float | None:
    program = shutil.which("ffprobe")
    if program is None:
        return None
    command = [program, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path]
    try:
        result = subprocess.run(  # noqa: S603 - a fixed program on the console's own file
            command, capture_output=True, timeout=30, check=True
        )
        seconds = float(result.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return seconds if math.isfinite(seconds) else None


def measure(upload: UploadedFile, content_type: str) -> float | None:
    """Seconds of audio in the uploaded file, or None when they cannot be measured."""
    if content_type == "audio/wav":
        return _wav_seconds(upload)
    if hasattr(upload, "temporary_file_path"):
        return _probe_seconds(upload.temporary_file_path())
    with tempfile.NamedTemporaryFile(suffix="." + AUDIO_TYPES[content_type]) as copy:
        upload.seek(0)
        shutil.copyfileobj(upload.file, copy)
        copy.flush()
        upload.seek(0)
        return _probe_seconds(copy.name)


def _checked_audio(upload: UploadedFile, field: str) -> tuple[str, int]:
    """(content type, whole seconds) of an uploaded audio file; 400 otherwise."""
    upload.seek(0)
    head = upload.read(16)
    upload.seek(0)
    if not head:
        raise ApiError(400, f"The '{field}' file is empty.", code="invalid_request")
    content_type = audio_type(head)
    if content_type is None:
        raise ApiError(
            400,
            f"The '{field}' file is not audio: send WAV, MP3, OGG, FLAC, WebM or M4A.",
            code="not_audio",
        )
    seconds = measure(upload, content_type)
    if seconds is None:
        raise ApiError(
            400,
            f"The duration of the '{field}' file could not be measured, so it cannot be "
            "priced; send it as WAV or MP3.",
            code="unmeasurable_audio",
        )
    if seconds <= 0:
        raise ApiError(400, f"The '{field}' file holds no audio.", code="invalid_request")
    return content_type, math.ceil(seconds)


def _upstream_file(upload: UploadedFile):
    """The file the fleet sends: from disk when the parser put it there (a new handle,
    which the fleet rewinds for each attempt), else the bytes already in memory."""
    if hasattr(upload, "temporary_file_path"):
        return open(upload.temporary_file_path(), "rb")  # noqa: SIM115 - closed by the caller
    upload.seek(0)
    return upload.read()


async def transcribe(
    caller: pipeline.Caller,
    body: dict,
    *,
    request_id: str,
    request: HttpRequest | None = None,
    endpoint: str = TRANSCRIBE_PATH,
) -> tuple[dict | str, pipeline.Call]:
    """Transcribe the uploaded file in `body` (`file` or `audio`: a Django UploadedFile,
    and the form's other fields as strings), held and charged for the seconds measured
    from the file; (the answer, JSON or text as asked, the booked call)."""
    fields = {name: value for name, value in body.items() if name not in ("file", "audio")}
    spec = validate(TranscriptionForm, fields)
    pipeline.authorize(caller, scope="audio", model=spec.model)
    field = "file" if body.get("file") is not None else "audio"
    upload = body.get(field)
    if not isinstance(upload, UploadedFile):
        raise ApiError(
            400,
            "The 'file' field is required: send the audio as multipart/form-data.",
            code="invalid_request",
        )
    content_type, seconds = await asyncio.to_thread(_checked_audio, upload, field)
    data = {"response_format": spec.response_format}
    if spec.language:
        data["language"] = spec.language
    if spec.model:
        data["model"] = spec.model
    extension = AUDIO_TYPES[content_type]
    units = {"transcription_second": seconds}
    call = await pipeline.start(
        caller, request_id=request_id, product="audio", endpoint=endpoint,
        model=spec.model or "", request=request, units=units,
    )  # fmt: skip
    source = await asyncio.to_thread(_upstream_file, upload)
    try:
        async with call:
            response = await call.forward(
                TRANSCRIBE_PATH, data=data,
                files={"file": (f"audio.{extension}", source, content_type)},
            )  # fmt: skip
            if spec.response_format == "text":
                answer: dict | str = response.content.decode("utf-8", "replace")
            else:
                try:
                    answer = response.json()
                except ValueError:
                    answer = None
                if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
                    call.status, call.error, call.units = 502, "Unusable upstream answer", {}
                    raise ApiError(
                        502, "The upstream's answer could not be used.", code="upstream_error"
                    )
                answer["duration"] = answer.get("duration") or seconds
            call.units = units
    finally:
        if not isinstance(source, bytes):
            source.close()
    return answer, call


def _form(request: HttpRequest) -> dict:
    """The multipart form: its fields (the last value of each) and its files."""
    try:
        fields = {name: request.POST[name] for name in request.POST}
        files = {name: request.FILES[name] for name in request.FILES}
    except RequestDataTooBig:
        raise too_large(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) from None
    except (MultiPartParserError, SuspiciousOperation) as exc:
        # Also too many fields or files (Django's DATA_UPLOAD_MAX_NUMBER_* settings).
        raise ApiError(400, f"The multipart body could not be read: {exc}") from None
    return fields | files


@endpoint("POST")
async def transcribe_view(request: HttpRequest) -> HttpResponse:
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(
            400,
            "Send the audio as multipart/form-data, in a field named 'file' or 'audio'.",
            code="invalid_request",
        )
    pipeline.authorize(request.caller, scope="audio")
    body = await asyncio.to_thread(_form, request)
    answer, _ = await transcribe(
        request.caller, body, request_id=request.request_id, request=request,
        endpoint=request.path,
    )  # fmt: skip
    if isinstance(answer, str):
        return HttpResponse(answer, content_type="text/plain; charset=utf-8")
    return JsonResponse(answer)


# --- voices ----------------------------------------------------------------------------


async def voices(caller: pipeline.Caller) -> dict:
    """The upstream's voices (free: nothing is spoken)."""
    pipeline.authorize(caller, scope="audio")
    try:
        response = await get_fleet().request("GET", VOICES_PATH)
    except UpstreamError as exc:
        raise pipeline.upstream_error(exc) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise ApiError(502, "The upstream's answer could not be used.", code="upstream_error")
    return answer


@endpoint("GET")
async def voices_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse(await voices(request.caller))


_AUDIO_BYTES = {"type": "string", "format": "binary"}

SCHEMAS = {
    "Transcription": {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "language": {"type": ["string", "null"]},
            "duration": {"type": ["number", "null"]},
        },
        "required": ["text"],
    },
    "VoiceList": {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
                    "required": ["id"],
                },
            },
        },
        "required": ["object", "data"],
    },
}

_SPEECH_TYPES = ("audio/mpeg", "audio/wav", "audio/pcm", "audio/ogg", "audio/opus")
_TRANSCRIPTION_TYPES = ("application/json", "text/plain")

OPERATIONS = [
    Operation(
        SPEECH_PATH, "post", "Speak a text (priced per character); the audio, its file id in x-file-id",
        MODEL_CALL_ERRORS, _AUDIO_BYTES, request=SpeechRequest,
        example={"input": "Hello from Mira", "voice": "aria", "response_format": "wav"},
        view=speech_view, name="audio_speech", produces=_SPEECH_TYPES,
    ),
    Operation(
        SHORTCUT_PATH, "post", "Speak a text with the default voice (priced per character)",
        MODEL_CALL_ERRORS, _AUDIO_BYTES, request=SpeechRequest,
        example={"text": "Hello from Mira"},
        view=speech_view, name="speech", produces=_SPEECH_TYPES,
    ),
    Operation(
        TRANSCRIBE_PATH, "post", "Transcribe an audio file (priced per second of the file)",
        MODEL_CALL_ERRORS, "Transcription", request=TranscriptionForm,
        view=transcribe_view, name="audio_transcribe", content_type="multipart/form-data",
        produces=_TRANSCRIPTION_TYPES,
    ),
    Operation(
        OPENAI_TRANSCRIBE_PATH, "post", "Transcribe an audio file (OpenAI-compatible path)",
        MODEL_CALL_ERRORS, "Transcription", request=TranscriptionForm,
        view=transcribe_view, name="audio_transcriptions", content_type="multipart/form-data",
        produces=_TRANSCRIPTION_TYPES,
    ),
    Operation(
        VOICES_PATH, "get", "The voices speech can use",
        (401, 403, *UPSTREAM_ERRORS), "VoiceList", view=voices_view, name="audio_voices",
    ),
]  # fmt: skip
