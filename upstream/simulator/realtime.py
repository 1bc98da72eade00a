"""The realtime voice WebSocket (`/v1/realtime`, MIRA_API.md section 8) and its preflight.

Audio is PCM16 mono 24 kHz, base64 in JSON events. With `turn_detection` set to
`server_vad` (the default) the server notices speech by its loudness, commits the
buffer after `silence_duration_ms` of silence and answers; with `turn_detection`
null the client commits and sends `response.create`. Audio appended while an
answer is playing cancels it (barge-in): on detected speech with server VAD, on
any append without it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import uuid
from array import array
from typing import Any

from upstream.simulator import audio
from upstream.simulator.fields import CHAT_MODELS
from upstream.simulator.replies import Turn, reply_text
from upstream.simulator.web import Request, Response, json_response
from upstream.tokens import count_tokens, tokenize

logger = logging.getLogger(__name__)

SUBPROTOCOL = "mira-realtime.v1"
KEY_SUBPROTOCOL = "openai-insecure-api-key."
CHUNK_BYTES = audio.RATE * 2 // 10  # 100 ms of audio per delta
MIN_COMMIT_BYTES = audio.RATE * 2 // 10
FRAME_BYTES = audio.RATE * 2 // 50  # 20 ms frames for voice detection
DEFAULT_VAD = {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 500}

PREFLIGHT = {
    "object": "realtime.preflight",
    "url": "/v1/realtime",
    "protocols": [SUBPROTOCOL],
    "auth": ["subprotocol", "bearer"],
    "input_audio_formats": ["pcm16"],
    "output_audio_formats": ["pcm16"],
    "sample_rate_hz": audio.RATE,
    "channels": 1,
    "voices": list(audio.VOICE_IDS),
    "models": list(CHAT_MODELS),
    "turn_detection": ["server_vad", None],
    "max_session_seconds": 1800,
}


async def preflight(sim: Any, request: Request) -> Response:
    return json_response(PREFLIGHT)


def offered_key(scope: dict[str, Any]) -> str | None:
    """The key a browser put in the `openai-insecure-api-key.<key>` subprotocol."""
    for protocol in scope.get("subprotocols") or []:
        if protocol.startswith(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL) :]
    return None


def _loudness(frame: bytes) -> float:
    samples = array("h", frame[: len(frame) // 2 * 2])
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


class Session:
    """One realtime connection, after the handshake was accepted."""

    def __init__(self, sim: Any, send: Any, model: str) -> None:
        self.sim = sim
        self._send = send
        self._send_lock = asyncio.Lock()
        self._events = 0
        self.closed = False
        self.session: dict[str, Any] = {
            "id": f"sess_{uuid.uuid4().hex[:20]}",
            "object": "realtime.session",
            "model": model,
            "modalities": ["text", "audio"],
            "voice": "aria",
            "instructions": "",
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "turn_detection": dict(DEFAULT_VAD),
            "tools": [],
        }
        self.buffer = bytearray()
        self.turns: list[Turn] = []
        self.response: asyncio.Task[None] | None = None
        self._cancel_reason = "client_cancelled"
        self._speaking = False
        self._silence_ms = 0.0
        self._frame_tail = b""

    async def emit(self, kind: str, **data: Any) -> None:
        if self.closed:
            return
        self._events += 1
        event = {"type": kind, "event_id": f"event_{self._events}", **data}
        async with self._send_lock:
            try:
                await self._send({"type": "websocket.send", "text": json.dumps(event)})
            except (OSError, RuntimeError):
                self.closed = True

    async def error(self, message: str, code: str, event_id: str | None = None) -> None:
        await self.emit(
            "error",
            error={
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "event_id": event_id,
            },
        )

    async def handle(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            await self.error("The event is not valid JSON.", "invalid_json")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            await self.error("The event must be an object with a 'type'.", "invalid_event")
            return
        kind = event["type"]
        handler = getattr(self, "on_" + kind.replace(".", "_"), None)
        if handler is None:
            await self.error(
                f"Unknown event type '{kind}'.", "unknown_event", event.get("event_id")
            )
            return
        await handler(event)

    # --- client events ----------------------------------------------------------------

    async def on_session_update(self, event: dict[str, Any]) -> None:
        changes = event.get("session")
        if not isinstance(changes, dict):
            await self.error("The 'session' field must be an object.", "invalid_value")
            return
        voice = changes.get("voice", self.session["voice"])
        if voice not in audio.VOICE_IDS:
            await self.error(f"Unknown voice '{voice}'.", "invalid_value", event.get("event_id"))
            return
        for name in ("input_audio_format", "output_audio_format"):
            if changes.get(name, "pcm16") != "pcm16":
                await self.error(f"Only pcm16 is supported for '{name}'.", "invalid_value")
                return
        turn_detection = changes.get("turn_detection", self.session["turn_detection"])
        if turn_detection is not None:
            if not isinstance(turn_detection, dict):
                await self.error("'turn_detection' must be an object or null.", "invalid_value")
                return
            turn_detection = {**DEFAULT_VAD, **turn_detection}
        for name in ("instructions", "modalities", "tools", "temperature"):
            if name in changes:
                self.session[name] = changes[name]
        self.session["voice"] = voice
        self.session["turn_detection"] = turn_detection
        await self.emit("session.updated", session=self.session)

    async def on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        try:
            chunk = base64.b64decode(event.get("audio") or "", validate=True)
        except (binascii.Error, ValueError):
            await self.error("The 'audio' field must be base64.", "invalid_audio")
            return
        self.buffer.extend(chunk)
        vad = self.session["turn_detection"]
        if vad is None:
            if self._responding():
                await self.cancel("turn_detected")
            return
        await self._detect_turns(chunk, vad)

    async def on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        if len(self.buffer) < MIN_COMMIT_BYTES:
            milliseconds = len(self.buffer) / (audio.RATE * 2) * 1000
            await self.error(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {milliseconds:.2f}ms of audio.",
                "input_audio_buffer_commit_empty",
                event.get("event_id"),
            )
            return
        await self._commit()
        if self.session["turn_detection"] is not None:
            await self.start_response({})

    async def on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self.buffer.clear()
        self._speaking = False
        await self.emit("input_audio_buffer.cleared")

    async def on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            await self.error("The 'item' field must be an object.", "invalid_value")
            return
        item = {"id": item.get("id") or f"item_{uuid.uuid4().hex[:20]}", **item}
        if item.get("type") == "function_call_output":
            self.turns.append(Turn("tool", str(item.get("output", ""))))
        else:
            texts = [
                part.get("text") or part.get("transcript") or ""
                for part in item.get("content") or []
                if isinstance(part, dict)
            ]
            self.turns.append(Turn(str(item.get("role", "user")), "\n".join(texts)))
        await self.emit("conversation.item.created", previous_item_id=None, item=item)

    async def on_response_create(self, event: dict[str, Any]) -> None:
        if self._responding():
            await self.error(
                "Conversation already has an active response.",
                "conversation_already_has_active_response",
                event.get("event_id"),
            )
            return
        options = event.get("response")
        await self.start_response(options if isinstance(options, dict) else {})

    async def on_response_cancel(self, event: dict[str, Any]) -> None:
        if not self._responding():
            await self.error(
                "There is no active response to cancel.",
                "response_cancel_not_active",
                event.get("event_id"),
            )
            return
        await self.cancel("client_cancelled")

    # --- turns and answers --------------------------------------------------------------

    def _responding(self) -> bool:
        return self.response is not None and not self.response.done()

    async def _detect_turns(self, chunk: bytes, vad: dict[str, Any]) -> None:
        data = self._frame_tail + chunk
        usable = len(data) // FRAME_BYTES * FRAME_BYTES
        self._frame_tail = data[usable:]
        threshold = 1000.0 * float(vad.get("threshold") or 0.5)
        silence_needed = float(vad.get("silence_duration_ms") or 500)
        for start in range(0, usable, FRAME_BYTES):
            loud = _loudness(data[start : start + FRAME_BYTES]) >= threshold
            if loud and not self._speaking:
                self._speaking = True
                self._silence_ms = 0.0
                if self._responding():
                    await self.cancel("turn_detected")
                audio_ms = int(len(self.buffer) / (audio.RATE * 2) * 1000)
                await self.emit("input_audio_buffer.speech_started", audio_start_ms=audio_ms)
            elif self._speaking:
                self._silence_ms = 0.0 if loud else self._silence_ms + 20
                if self._silence_ms >= silence_needed:
                    self._speaking = False
                    audio_ms = int(len(self.buffer) / (audio.RATE * 2) * 1000)
                    await self.emit("input_audio_buffer.speech_stopped", audio_end_ms=audio_ms)
                    if len(self.buffer) >= MIN_COMMIT_BYTES:
                        await self._commit()
                        await self.start_response({})

    async def _commit(self) -> None:
        pcm = bytes(self.buffer)
        self.buffer.clear()
        self._frame_tail = b""
        item_id = f"item_{uuid.uuid4().hex[:20]}"
        await self.emit("input_audio_buffer.committed", previous_item_id=None, item_id=item_id)
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self.emit("conversation.item.created", previous_item_id=None, item=item)
        seconds = len(pcm) / (audio.RATE * 2)
        # Its own speech is known exactly, or heard back through a microphone by its sound.
        transcript = (
            audio.SPEECH_MEMORY.recall(pcm)
            or audio.recognize(pcm, "audio/pcm")
            or audio.describe(seconds, "audio/pcm")
        )
        where = {"item_id": item_id, "content_index": 0}
        for piece in transcript.split(" "):
            await self.emit(
                "conversation.item.input_audio_transcription.delta", **where, delta=piece + " "
            )
        await self.emit(
            "conversation.item.input_audio_transcription.completed",
            **where,
            transcript=transcript,
        )
        self.turns.append(Turn("user", transcript))

    async def start_response(self, options: dict[str, Any]) -> None:
        if self._responding():
            await self.cancel("turn_detected")
        self.response = asyncio.get_running_loop().create_task(self._respond(options))

    async def cancel(self, reason: str) -> None:
        task = self.response
        if task is None or task.done():
            return
        self._cancel_reason = reason
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise

    async def close(self) -> None:
        self._cancel_reason = "disconnected"
        await self.cancel("disconnected")
        self.closed = True

    async def _respond(self, options: dict[str, Any]) -> None:
        response_id = f"resp_{uuid.uuid4().hex[:20]}"
        item_id = f"item_{uuid.uuid4().hex[:20]}"
        modalities = options.get("modalities") or self.session["modalities"]
        speak = "audio" in modalities
        instructions = options.get("instructions") or self.session["instructions"]
        turns = ([Turn("system", instructions)] if instructions else []) + self.turns
        text = reply_text(turns, self.session["model"])
        base = {"id": response_id, "object": "realtime.response"}
        await self.emit(
            "response.created", response={**base, "status": "in_progress", "output": []}
        )
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        await self.emit(
            "response.output_item.added", response_id=response_id, output_index=0, item=item
        )
        where = {
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
        }
        spoken: list[str] = []
        try:
            delay = self.sim.settings.chunk_delay_ms / 1000
            pieces = tokenize(text)
            if speak:
                pcm = await asyncio.to_thread(
                    audio.synthesize,
                    text,
                    self.session["voice"],
                    espeak=self.sim.settings.use_espeak,
                )
                chunks = [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]
                per_chunk = max(1, math.ceil(len(pieces) / max(1, len(chunks))))
                for index, chunk in enumerate(chunks):
                    words = pieces[index * per_chunk : (index + 1) * per_chunk]
                    if words:
                        spoken.extend(words)
                        await self.emit(
                            "response.audio_transcript.delta", **where, delta="".join(words)
                        )
                    await self.emit(
                        "response.audio.delta", **where, delta=base64.b64encode(chunk).decode()
                    )
                    await asyncio.sleep(delay)
                rest = pieces[len(spoken) :]
                if rest:
                    spoken.extend(rest)
                    await self.emit("response.audio_transcript.delta", **where, delta="".join(rest))
                await self.emit("response.audio.done", **where)
                await self.emit("response.audio_transcript.done", **where, transcript=text)
                content = [{"type": "audio", "transcript": text}]
            else:
                for piece in pieces:
                    spoken.append(piece)
                    await self.emit("response.text.delta", **where, delta=piece)
                    await asyncio.sleep(delay)
                await self.emit("response.text.done", **where, text=text)
                content = [{"type": "text", "text": text}]
        except asyncio.CancelledError:
            partial = "".join(spoken)
            if partial:
                self.turns.append(Turn("assistant", partial))
            if self._cancel_reason != "disconnected":
                await self.emit(
                    "response.done",
                    response={
                        **base,
                        "status": "cancelled",
                        "status_details": {"type": "cancelled", "reason": self._cancel_reason},
                        "output": [],
                        "usage": self._usage(turns, partial),
                    },
                )
            raise
        item = {**item, "status": "completed", "content": content}
        await self.emit(
            "response.output_item.done", response_id=response_id, output_index=0, item=item
        )
        self.turns.append(Turn("assistant", text))
        await self.emit(
            "response.done",
            response={
                **base,
                "status": "completed",
                "output": [item],
                "usage": self._usage(turns, text),
            },
        )

    @staticmethod
    def _usage(turns: list[Turn], text: str) -> dict[str, int]:
        prompt = sum(count_tokens(t.text) + 4 for t in turns)
        output = count_tokens(text)
        return {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output}


async def serve(sim: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Run one realtime WebSocket connection, from the handshake to the close."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    rejection = sim.websocket_rejection(headers, offered_key(scope))
    if rejection is not None:
        status, detail = rejection
        if "websocket.http.response" in (scope.get("extensions") or {}):
            body = json.dumps({"detail": detail}).encode()
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        return
    query = Request(scope, b"", headers).query
    model = query.get("model") or "mira"
    offered = scope.get("subprotocols") or []
    chosen = SUBPROTOCOL if SUBPROTOCOL in offered else None
    await send({"type": "websocket.accept", "subprotocol": chosen})
    session = Session(sim, send, model)
    sim.stats.websocket_sessions += 1
    sim.stats.open_websockets += 1
    try:
        await session.emit("session.created", session=session.session)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            if message["type"] == "websocket.receive":
                text = message.get("text")
                if text is None and message.get("bytes") is not None:
                    text = message["bytes"].decode("utf-8", "replace")
                await session.handle(text or "")
    finally:
        sim.stats.open_websockets -= 1
        await session.close()
