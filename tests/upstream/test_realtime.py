"""The realtime WebSocket: handshake auth, session events, spoken answers, barge-in."""

import base64

import pytest

from upstream import client
from upstream.errors import UpstreamError
from upstream.fleet import Fleet
from upstream.nodes import NodeConfig
from upstream.simulator import audio


async def until(session, kind: str, limit: int = 2000) -> tuple[dict, list[dict]]:
    """Read events until one of `kind`; return it and every event before it."""
    seen = []
    for _ in range(limit):
        event = await session.recv(wait_seconds=10)
        if event["type"] == kind:
            return event, seen
        seen.append(event)
    raise AssertionError(f"no {kind} event")


async def test_preflight_describes_the_protocol(upstream_fleet):
    info = (await client.realtime_preflight(upstream_fleet)).json()
    assert info["protocols"] == ["mira-realtime.v1"]
    assert info["sample_rate_hz"] == 24000
    assert "aria" in info["voices"]
    assert set(info["auth"]) == {"subprotocol", "bearer"}


@pytest.mark.parametrize("auth", ["bearer", "subprotocol"])
async def test_it_opens_a_session_with_either_kind_of_auth(upstream_fleet, auth):
    async with await client.realtime_connect(upstream_fleet, auth=auth) as session:
        created = await session.recv(wait_seconds=5)
        assert session.subprotocol == "mira-realtime.v1"
        assert session.node == "simulator"
    assert created["type"] == "session.created"
    assert created["session"]["voice"] == "aria"


async def test_a_bad_key_is_refused_with_401(simulator):
    fleet = Fleet([NodeConfig("bad", simulator.base_url, api_key="not-a-mira-key")])
    with pytest.raises(UpstreamError) as caught:
        await client.realtime_connect(fleet, auth="subprotocol")
    assert caught.value.status == 401
    assert caught.value.detail == "Invalid API key"


async def test_it_answers_spoken_input_with_speech_and_a_transcript(upstream_fleet):
    question = "reply with: Sure, the meeting is at noon."
    spoken = await client.speech(upstream_fleet, {"input": question, "response_format": "pcm"})
    async with await client.realtime_connect(upstream_fleet) as session:
        await until(session, "session.created")
        await session.send(
            {"type": "session.update", "session": {"turn_detection": None, "voice": "orion"}}
        )
        updated, _ = await until(session, "session.updated")
        assert updated["session"]["voice"] == "orion"
        pcm = spoken.content
        for start in range(0, len(pcm), 9600):
            chunk = base64.b64encode(pcm[start : start + 9600]).decode()
            await session.send({"type": "input_audio_buffer.append", "audio": chunk})
        await session.send({"type": "input_audio_buffer.commit"})
        heard, _ = await until(session, "conversation.item.input_audio_transcription.completed")
        assert heard["transcript"] == question
        await session.send({"type": "response.create"})
        done, events = await until(session, "response.done")
    kinds = [e["type"] for e in events]
    assert kinds.index("response.created") < kinds.index("response.audio.delta")
    assert kinds.index("response.audio.delta") < kinds.index("response.audio.done")
    audio_bytes = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta"
    )
    transcript = "".join(
        e["delta"] for e in events if e["type"] == "response.audio_transcript.delta"
    )
    assert transcript == "Sure, the meeting is at noon."
    assert len(audio_bytes) % 2 == 0 and len(audio_bytes) / 48000 > 0.5
    assert done["response"]["status"] == "completed"
    assert done["response"]["usage"]["output_tokens"] > 0


async def test_text_items_get_text_answers_when_asked(upstream_fleet):
    async with await client.realtime_connect(upstream_fleet) as session:
        await until(session, "session.created")
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "reply with: hi!"}],
        }
        await session.send({"type": "conversation.item.create", "item": item})
        await until(session, "conversation.item.created")
        await session.send({"type": "response.create", "response": {"modalities": ["text"]}})
        done, events = await until(session, "response.done")
    text = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
    assert text == "hi!"
    assert done["response"]["output"][0]["content"][0]["text"] == "hi!"


async def test_appending_audio_while_it_speaks_cancels_the_answer(start_simulator, make_fleet):
    fleet = make_fleet(start_simulator(chunk_delay_ms=20))
    async with await client.realtime_connect(fleet) as session:
        await until(session, "session.created")
        await session.send({"type": "session.update", "session": {"turn_detection": None}})
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Tell me a long story"}],
        }
        await session.send({"type": "conversation.item.create", "item": item})
        await session.send({"type": "response.create"})
        await until(session, "response.audio.delta")
        silence = base64.b64encode(bytes(4800)).decode()
        await session.send({"type": "input_audio_buffer.append", "audio": silence})
        done, _ = await until(session, "response.done")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    await fleet.aclose()


async def test_server_vad_commits_and_answers_after_speech_then_silence(upstream_fleet):
    spoken = await client.speech(upstream_fleet, {"input": "Hello there", "response_format": "pcm"})
    pcm = spoken.content + bytes(24000 * 2)
    async with await client.realtime_connect(upstream_fleet) as session:
        await until(session, "session.created")
        for start in range(0, len(pcm), 4800):
            chunk = base64.b64encode(pcm[start : start + 4800]).decode()
            await session.send({"type": "input_audio_buffer.append", "audio": chunk})
        await until(session, "input_audio_buffer.speech_started")
        await until(session, "input_audio_buffer.speech_stopped")
        await until(session, "input_audio_buffer.committed")
        created, _ = await until(session, "response.created")
    assert created["response"]["status"] == "in_progress"


async def test_it_reports_errors_as_error_events(upstream_fleet):
    async with await client.realtime_connect(upstream_fleet) as session:
        await until(session, "session.created")
        await session.send({"type": "input_audio_buffer.commit"})
        empty, _ = await until(session, "error")
        await session.send({"type": "teleport"})
        unknown, _ = await until(session, "error")
        await session.send({"type": "response.cancel"})
        idle, _ = await until(session, "error")
    assert empty["error"]["code"] == "input_audio_buffer_commit_empty"
    assert unknown["error"]["code"] == "unknown_event"
    assert idle["error"]["code"] == "response_cancel_not_active"


def test_its_own_pcm_is_remembered_for_transcription():
    pcm = audio.synthesize("remember me", espeak=False)
    audio.SPEECH_MEMORY.remember(pcm, "remember me")
    assert audio.SPEECH_MEMORY.recall(pcm) == "remember me"
    assert audio.SPEECH_MEMORY.recall(pcm + b"\0\0") is None
