"""Voice through the console: speech charged per character and kept as a file,
transcription charged per second measured from the upload itself, voices, and uploads
that are refused (too large, not audio) before the upstream sees them."""

import io
import math
import socket
import time
import tracemalloc
import wave

import httpx
import openai
import pytest

from console import ledger
from console.actions import create_key
from console.models import Hold, UsageRecord
from console.pricing import unit_cost
from gateway import audio, pipeline
from gateway.asgi import new_request_id
from gateway.models import StoredFile
from tests.conftest import settle_books
from tests.gateway.conftest import charged

MB = 1024 * 1024


def _openai(console_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=console_url, api_key=key, max_retries=0)


def speech_price(characters: int) -> int:
    return unit_cost("audio", "", "speech_character", characters)


def transcription_price(seconds: int) -> int:
    return unit_cost("audio", "", "transcription_second", seconds)


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as reader:
        return reader.getnframes() / reader.getframerate()


def silent_wav(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\0\0" * int(seconds * rate))
    return buffer.getvalue()


def test_the_openai_sdk_speaks_a_wav_whose_header_and_duration_are_right(
    console_url, api_key, acme
):
    start = ledger.balance_of(acme)
    text = "Hello from the Mira console, spoken aloud."
    raw = _openai(console_url, api_key).audio.speech.with_raw_response.create(
        model="mira-voice", voice="aria", input=text, response_format="wav"
    )
    data = raw.content
    assert raw.headers["content-type"] == "audio/wav"
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getnchannels() == 1 and reader.getsampwidth() == 2
        assert reader.getframerate() == 24_000
        # The duration the header states is the audio the file holds, sample for sample.
        assert len(reader.readframes(reader.getnframes())) == reader.getnframes() * 2
    # Seven words take a speaker (espeak-ng at its default rate) about two and a half
    # seconds: a duration far outside that is a header or a relay that lost audio.
    assert 1.0 < wav_seconds(data) < 10.0

    record = charged(raw.headers["x-request-id"])
    assert record.product == "audio" and record.status == 200
    assert record.endpoint == "/v1/audio/speech"
    assert record.units == {"speech_character": len(text)}
    assert record.cost == speech_price(len(text)) > 0
    assert ledger.balance_of(acme) == start - record.cost
    assert not Hold.objects.exists()

    kept = StoredFile.objects.get(pk=raw.headers["x-file-id"])
    assert kept.purpose == "audio" and kept.content_type == "audio/wav"
    assert kept.size == len(data) and kept.request_id == raw.headers["x-request-id"]


def test_speech_is_relayed_as_it_comes_and_kept_as_the_file_it_names(console_url, api_key):
    with httpx.stream(
        "POST", f"{console_url}/audio/speech", json={"input": "Streamed", "response_format": "pcm"},
        headers={"x-api-key": api_key}, timeout=60,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        data = response.read()
    assert response.headers["content-type"] == "audio/pcm" and len(data) % 2 == 0
    kept = StoredFile.objects.get(pk=response.headers["x-file-id"])
    assert kept.content_type == "audio/pcm" and kept.size == len(data)
    record = charged(response.headers["x-request-id"])
    assert record.status == 200 and record.cost == speech_price(8)


def test_a_caller_that_leaves_mid_speech_is_booked_once_for_the_characters_spoken(
    console_url, api_key
):
    text = ("A long sentence for the synthesizer to speak. " * 90)[:4096]
    with httpx.stream(
        "POST", f"{console_url}/audio/speech", json={"input": text, "response_format": "wav"},
        headers={"x-api-key": api_key}, timeout=60,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        first = next(response.iter_raw(16 * 1024))
        assert first[:4] == b"RIFF"
    request_id = response.headers["x-request-id"]
    for _ in range(200):
        settle_books()
        if UsageRecord.objects.filter(request_id=request_id).exists():
            break
        time.sleep(0.05)
    record = charged(request_id)
    assert record.status == 499 and record.units == {"speech_character": 4096}
    assert record.cost == speech_price(4096)
    assert UsageRecord.objects.filter(request_id=request_id).count() == 1
    assert not Hold.objects.exists()
    assert not StoredFile.objects.exists()


def test_speech_is_mp3_by_default_and_whitespace_is_charged(console_url, api_key):
    text = "  two   words  "
    response = httpx.post(
        f"{console_url}/audio/speech", json={"input": text},
        headers={"x-api-key": api_key}, timeout=60,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/mpeg"
    assert response.content[:3] == b"ID3"
    record = charged(response.headers["x-request-id"])
    assert record.units == {"speech_character": 15}
    assert record.cost == speech_price(15) > 0


def test_the_openai_sdk_transcribes_the_speech_it_made_and_is_charged_by_its_seconds(
    console_url, api_key
):
    client = _openai(console_url, api_key)
    text = "The quick brown fox jumps over the lazy dog."
    spoken = client.audio.speech.create(
        model="mira-voice", voice="nova", input=text, response_format="wav"
    ).read()
    seconds = math.ceil(wav_seconds(spoken))

    raw = client.audio.transcriptions.with_raw_response.create(
        model="mira-transcribe", file=("speech.wav", spoken, "audio/wav")
    )
    assert raw.parse().text == text
    record = charged(raw.headers["x-request-id"])
    assert record.product == "audio" and record.endpoint == "/v1/audio/transcriptions"
    assert record.units == {"transcription_second": seconds}
    assert record.cost == transcription_price(seconds) > 0


def test_a_text_transcription_is_charged_by_the_seconds_of_the_file(console_url, api_key):
    client = _openai(console_url, api_key)
    text = "Plain text has no duration."
    spoken = client.audio.speech.create(
        model="mira-voice", voice="aria", input=text, response_format="wav"
    ).read()
    raw = client.audio.transcriptions.with_raw_response.create(
        model="mira-transcribe", file=("speech.wav", spoken), response_format="text"
    )
    assert raw.parse().strip() == text
    seconds = math.ceil(wav_seconds(spoken))
    record = charged(raw.headers["x-request-id"])
    assert record.units == {"transcription_second": seconds}
    assert record.cost == transcription_price(seconds) > 0


def test_the_seed_transcribe_path_takes_the_audio_field_from_a_plain_http_client(
    console_url, api_key
):
    response = httpx.post(
        f"{console_url}/audio/transcribe",
        files={"audio": ("clip.wav", silent_wav(2.5), "audio/wav")},
        data={"language": "en"},
        headers={"x-api-key": api_key},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["language"] == "en" and answer["duration"] == 2.5
    assert "2.5 seconds" in answer["text"]
    record = charged(response.headers["x-request-id"])
    assert record.endpoint == "/v1/audio/transcribe"
    assert record.units == {"transcription_second": 3}
    assert record.cost == transcription_price(3) == 300


def test_an_mp3_upload_is_measured_with_ffprobe(console_url, api_key):
    mp3 = httpx.post(
        f"{console_url}/audio/speech", json={"input": "Measured by its own frames."},
        headers={"x-api-key": api_key}, timeout=60,
    ).content  # fmt: skip
    response = httpx.post(
        f"{console_url}/audio/transcribe", files={"file": ("clip.mp3", mp3, "audio/mpeg")},
        headers={"x-api-key": api_key}, timeout=60,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "Measured by its own frames."
    record = charged(response.headers["x-request-id"])
    assert record.units["transcription_second"] >= 1
    assert record.cost == transcription_price(record.units["transcription_second"])


def test_voices_and_the_speech_shortcut_answer_curl_shaped_calls(console_url, api_key):
    headers = {"Authorization": f"Bearer {api_key}"}
    listed = httpx.get(f"{console_url}/audio/voices", headers=headers, timeout=30)
    assert listed.status_code == 200
    assert "aria" in [voice["id"] for voice in listed.json()["data"]]

    response = httpx.post(
        f"{console_url}/speech", json={"text": "Shortcut"}, headers=headers, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("audio/")
    record = charged(response.headers["x-request-id"])
    assert record.endpoint == "/v1/speech" and record.units == {"speech_character": 8}
    assert record.cost == speech_price(8)


def test_a_text_file_sent_as_audio_is_400_and_nothing_is_sent_or_booked(
    console_url, api_key, simulator
):
    before = simulator.stats()["requests"]
    response = httpx.post(
        f"{console_url}/audio/transcriptions",
        files={"file": ("notes.wav", b"just some text, not a sound\n" * 40, "audio/wav")},
        headers={"x-api-key": api_key},
        timeout=30,
    )
    assert response.status_code == 400
    assert "'file' file is not audio" in response.json()["detail"]
    assert simulator.stats()["requests"] == before
    settle_books()
    assert not UsageRecord.objects.exists()


def test_an_upload_without_a_file_names_the_field(console_url, api_key):
    response = httpx.post(
        f"{console_url}/audio/transcribe", files={"language": (None, "en")},
        headers={"x-api-key": api_key}, timeout=30,
    )  # fmt: skip
    assert response.status_code == 400
    assert "'file' field is required" in response.json()["detail"]


def test_a_form_with_too_many_files_is_a_400(console_url, api_key):
    files = [("file", (f"{index}.wav", silent_wav(0.1), "audio/wav")) for index in range(101)]
    response = httpx.post(
        f"{console_url}/audio/transcribe", files=files, headers={"x-api-key": api_key}, timeout=30
    )
    assert response.status_code == 400
    assert "multipart body could not be read" in response.json()["detail"]


def test_audio_whose_duration_cannot_be_measured_is_refused_rather_than_free(
    console_url, api_key, simulator
):
    before = simulator.stats()["requests"]
    # An Ogg page header and nothing an Ogg reader can use.
    response = httpx.post(
        f"{console_url}/audio/transcribe", files={"file": ("x.ogg", b"OggS" + b"\0" * 200)},
        headers={"x-api-key": api_key}, timeout=30,
    )  # fmt: skip
    assert response.status_code == 400
    assert "could not be measured" in response.json()["detail"]
    assert simulator.stats()["requests"] == before


def _raw_post(url: str, head: str, body_bytes: int, chunked: bool) -> bytes:
    """Send a large multipart body over a plain socket (without building it in memory);
    the status line of the answer."""
    host, _, rest = url.removeprefix("http://").partition("/")
    address, port = host.split(":")
    boundary = "xyzzy"
    preamble = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    with socket.create_connection((address, int(port)), timeout=30) as sock:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {body_bytes}"
        sock.sendall(
            (
                f"POST /{rest} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n{framing}\r\n\r\n"
            ).encode()
        )
        piece = b"\0" * (256 * 1024)
        sent = 0
        try:
            if chunked:
                sock.sendall(f"{len(preamble):x}\r\n".encode() + preamble + b"\r\n")
            while sent < body_bytes:
                if chunked:
                    sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                else:
                    sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sock.recv(4096).split(b"\r\n", 1)[0]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_30_mb_upload_is_413_before_the_upstream_sees_it_and_is_never_held_in_memory(
    console_url, api_key, simulator, chunked
):
    before = simulator.stats()["requests"]
    tracemalloc.start()
    try:
        status = _raw_post(
            f"{console_url}/audio/transcriptions", f"x-api-key: {api_key}", 30 * MB, chunked
        )
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    # The test's own 256 KiB pieces and the server's buffers; far from the upload's size.
    assert peak < 5 * MB
    assert simulator.stats()["requests"] == before
    settle_books()
    assert not UsageRecord.objects.exists()


def test_a_key_without_the_audio_scope_gets_403_and_nothing_is_sent(
    console_url, alice, acme, simulator
):
    _key, secret = create_key(workspace=acme, name="chat only", created_by=alice, scopes=["chat"])
    before = simulator.stats()["requests"]
    client = _openai(console_url, secret)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.audio.speech.create(model="mira-voice", voice="aria", input="Hi")
    assert "not allowed to use audio" in caught.value.message
    with pytest.raises(openai.PermissionDeniedError):
        client.audio.transcriptions.create(model="x", file=("a.wav", silent_wav(1.0)))
    listed = httpx.get(f"{console_url}/audio/voices", headers={"x-api-key": secret}, timeout=30)
    assert listed.status_code == 403
    assert simulator.stats()["requests"] == before
    settle_books()
    assert not UsageRecord.objects.exists()


def test_a_speech_the_upstream_refuses_costs_nothing(console_url, api_key, acme):
    start = ledger.balance_of(acme)
    response = httpx.post(
        f"{console_url}/audio/speech", json={"input": "Hello", "voice": "nobody"},
        headers={"x-api-key": api_key}, timeout=30,
    )  # fmt: skip
    assert response.status_code == 400
    assert "Unknown voice" in response.json()["detail"]
    record = charged(response.headers["x-request-id"])
    assert record.status == 400 and record.cost == 0
    assert ledger.balance_of(acme) == start
    assert not StoredFile.objects.exists()


@pytest.mark.parametrize(
    ("fault", "status"),
    [({"x-sim-status": "503"}, 503), ({"x-sim-reset-after-chunks": "0"}, 502)],
    ids=["unavailable", "broken-answer"],
)
def test_a_speech_the_upstream_fails_to_answer_costs_nothing(
    console_url, api_key, acme, fault, status
):
    start = ledger.balance_of(acme)
    response = httpx.post(
        f"{console_url}/audio/speech", json={"input": "Hello"},
        headers={"x-api-key": api_key} | fault, timeout=30,
    )  # fmt: skip
    assert response.status_code == status
    record = charged(response.headers["x-request-id"])
    assert record.status == status and record.cost == 0 and record.units == {}
    assert ledger.balance_of(acme) == start
    assert not Hold.objects.exists() and not StoredFile.objects.exists()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "'input' field is required"),
        ({"input": ""}, "'input'"),
        ({"input": "x" * 4097}, "'input'"),
        ({"input": "Hi", "response_format": "flac"}, "'response_format'"),
        ({"input": "Hi", "speed": 9.0}, "'speed'"),
    ],
)
def test_a_bad_speech_field_is_a_400_that_names_it(console_url, api_key, body, named):
    response = httpx.post(
        f"{console_url}/audio/speech", json=body, headers={"x-api-key": api_key}, timeout=30
    )
    assert response.status_code == 400
    assert named in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
async def test_a_member_speaks_through_the_function_the_playground_calls(
    alice, acme, upstream_fleet
):
    caller = pipeline.as_member(workspace_id=acme.pk, user_id=alice.pk)
    (data, content_type, file_id), call = await audio.speak(
        caller, {"input": "From the playground", "response_format": "wav"},
        request_id=new_request_id(),
    )  # fmt: skip
    assert content_type == "audio/wav" and data[:4] == b"RIFF"
    assert await call.charged() == speech_price(19)
    record = await UsageRecord.objects.aget(request_id=call.request_id)
    assert record.source == "playground" and record.product == "audio"
    assert await StoredFile.objects.filter(pk=file_id, workspace=acme).aexists()


def test_audio_calls_show_in_usage_under_their_product(console_url, api_key, alice_client):
    response = httpx.post(
        f"{console_url}/speech", json={"text": "Usage"}, headers={"x-api-key": api_key},
        timeout=60,
    )  # fmt: skip
    assert response.status_code == 200
    settle_books()
    page = alice_client.get("/w/acme/usage/?group=product")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Speech and transcription" in text and "/v1/speech" in text
