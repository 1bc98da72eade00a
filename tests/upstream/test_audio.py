"""Voice: real audio out, transcription that hears the simulator's own speech back."""

import io
import random
import shutil
import wave
from array import array

import pytest

from upstream import client
from upstream.errors import UpstreamError
from upstream.simulator import audio

SENTENCE = "The quick brown fox jumps over the lazy dog."


async def test_it_lists_voices_with_aria_first(upstream_fleet):
    voices = (await client.voices(upstream_fleet)).json()["data"]
    assert voices[0]["id"] == "aria"
    assert len(voices) >= 3
    assert {"id", "name", "language", "gender"} <= set(voices[0])


async def test_it_speaks_a_wav_that_decodes_to_its_duration(upstream_fleet):
    response = await client.speech(
        upstream_fleet, {"input": SENTENCE, "voice": "aria", "response_format": "wav"}
    )
    assert response.content_type == "audio/wav"
    with wave.open(io.BytesIO(response.content)) as reader:
        seconds = reader.getnframes() / reader.getframerate()
        assert reader.getframerate() == 24000
        assert reader.getnchannels() == 1
        assert reader.getsampwidth() == 2
    assert 1.0 < seconds < 10.0
    assert abs(seconds - float(response.headers["x-audio-duration"])) < 0.01


async def test_transcribing_its_own_wav_returns_the_exact_text(upstream_fleet):
    spoken = await client.speech(
        upstream_fleet, {"input": SENTENCE, "voice": "nova", "response_format": "wav"}
    )
    heard = (await client.transcribe(upstream_fleet, spoken.content)).json()
    assert heard["text"] == SENTENCE
    assert heard["language"] == "en"
    with wave.open(io.BytesIO(spoken.content)) as reader:
        assert heard["duration"] == pytest.approx(reader.getnframes() / 24000, abs=0.01)


async def test_transcribing_its_own_pcm_returns_the_exact_text(upstream_fleet):
    spoken = await client.speech(upstream_fleet, {"input": "Привет, мир", "response_format": "pcm"})
    assert spoken.content_type == "audio/pcm"
    heard = await client.transcribe(
        upstream_fleet, spoken.content, filename="speech.pcm", content_type="audio/pcm"
    )
    assert heard.json()["text"] == "Привет, мир"
    assert heard.json()["language"] == "ru"


async def test_it_speaks_mp3_that_transcribes_back(upstream_fleet):
    # ffmpeg is optional for the console, but `make test` installs it (bin/system-packages).
    assert shutil.which("ffmpeg"), "ffmpeg is needed for MP3: `make test` installs it"
    spoken = await client.speech(upstream_fleet, {"input": SENTENCE, "response_format": "mp3"})
    assert spoken.content_type == "audio/mpeg"
    assert spoken.content[:3] == b"ID3"
    heard = await client.transcribe(
        upstream_fleet, spoken.content, filename="speech.mp3", content_type="audio/mpeg"
    )
    assert heard.json()["text"] == SENTENCE
    assert heard.json()["duration"] > 1.0


async def test_without_ffmpeg_mp3_falls_back_to_wav(start_simulator, make_fleet):
    fleet = make_fleet(start_simulator(use_ffmpeg=False, use_espeak=False))
    spoken = await client.speech(fleet, {"input": "Hello there", "response_format": "mp3"})
    assert spoken.content_type == "audio/wav"
    with wave.open(io.BytesIO(spoken.content)) as reader:
        assert reader.getnframes() > 0
    heard = await client.transcribe(fleet, spoken.content)
    assert heard.json()["text"] == "Hello there"
    await fleet.aclose()


async def test_other_audio_gets_an_honest_description_with_its_duration(upstream_fleet):
    silence = audio.wav_bytes(bytes(2 * 24000 * 3 // 2))
    heard = (await client.transcribe(upstream_fleet, silence)).json()
    assert heard["text"] == "(simulated transcription of 1.5 seconds of audio)"
    assert heard["duration"] == 1.5


def _as_heard(pcm: bytes, *, rate: int = 48000, start: float = 0.4) -> bytes:
    """Speech as a microphone would hear it played in a loop: from part-way through, at
    another rate, half as loud, with noise; a WAV of that, as a browser makes one."""
    samples = array("h", pcm)
    looped = samples[int(len(samples) * start) :] + samples + samples
    step = audio.RATE / rate
    noise = random.Random(7)
    heard = array(
        "h",
        [
            max(-32768, min(32767, int(looped[int(i * step)] * 0.5 + noise.gauss(0, 300))))
            for i in range(int(3 * rate))
        ],
    )
    return audio.wav_bytes(heard.tobytes(), rate)


async def test_its_own_speech_heard_through_a_microphone_is_recognised(upstream_fleet):
    other = "The ferry leaves at noon from the northern pier."
    for text in (SENTENCE, other):
        await client.speech(upstream_fleet, {"input": text, "response_format": "pcm"})
    spoken = await client.speech(upstream_fleet, {"input": SENTENCE, "response_format": "pcm"})
    heard = await client.transcribe(upstream_fleet, _as_heard(spoken.content))
    assert heard.json()["text"] == SENTENCE
    # Noise alone sounds like nothing it said.
    noise = random.Random(3)
    hiss = array("h", [int(noise.gauss(0, 2000)) for _ in range(48000 * 2)])
    heard = await client.transcribe(upstream_fleet, audio.wav_bytes(hiss.tobytes(), 48000))
    assert heard.json()["text"] == "(simulated transcription of 2.0 seconds of audio)"


async def test_it_rejects_an_unknown_voice_naming_the_choices(upstream_fleet):
    with pytest.raises(UpstreamError) as caught:
        await client.speech(upstream_fleet, {"input": "x", "voice": "hal"})
    assert caught.value.status == 400
    assert "aria" in caught.value.detail


async def test_it_requires_the_input_text(upstream_fleet):
    with pytest.raises(UpstreamError) as caught:
        await client.speech(upstream_fleet, {"voice": "aria"})
    assert caught.value.detail == "The 'input' field is required."
