"""The Voice page against the real simulator: speech streams from a ticket the form gives and
is kept as a run with its cost once complete; two voices compare side by side; an uploaded
file is transcribed; bad input is named beside its field and nothing is kept; other members
and other workspaces see nothing."""

import html
import io
import re
import wave

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache

from accounts.roles import Role as MemberRole
from console.models import UsageRecord
from playground.models import VoiceRun
from tests.conftest import settle_books, signed_in

# The gateway keeps files and books calls from threads of its own, which must see the test's data.
pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/w/acme/playground/voice/"
SPEAK = PAGE + "speak/"
TRANSCRIBE = PAGE + "transcribe/"
PREVIEW = PAGE + "preview/"
CODE = PAGE + "code/"
HTMX = {"HTTP_HX_REQUEST": "true"}
TEXT = "Hello from the Voice page of the console."


def speak(client, **fields):
    data = {"input": TEXT, "voice": "aria", "speed": "1", "response_format": "wav"}
    return client.post(SPEAK, data | fields, **HTMX)


def sources(page: str) -> list[str]:
    """The players' sources, in order."""
    return [
        html.unescape(s) for s in re.findall(r'<audio controls preload="auto" src="([^"]+)"', page)
    ]


def statuses(page: str) -> list[str]:
    return [html.unescape(s) for s in re.findall(r'hx-get="([^"]+/status/\?ticket=[^"]+)"', page)]


def listen(server, client, src: str) -> httpx.Response:
    """What the browser's player gets from its source, over a real socket."""
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    return httpx.get(
        server.url + src,
        cookies={settings.SESSION_COOKIE_NAME: cookie},
        timeout=30,
        follow_redirects=True,
    )


def wav(seconds: float, rate: int = 16_000) -> io.BytesIO:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\0\0" * int(seconds * rate))
    buffer.seek(0)
    buffer.name = "silence.wav"
    return buffer


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


@pytest.fixture
def spoken(alice_client, upstream_fleet, asgi_server) -> tuple[VoiceRun, bytes]:
    """Alice's speech of TEXT in aria, as WAV, streamed to the end: the run and the audio."""
    (src,) = sources(speak(alice_client).content.decode())
    answer = listen(asgi_server, alice_client, src)
    assert answer.status_code == 200
    return VoiceRun.objects.get(), answer.content


def test_the_page_renders_for_a_member_with_the_voices(alice_client, upstream_fleet):
    response = alice_client.get(PAGE)
    assert response.status_code == 200
    page = response.content.decode()
    tabs = re.search(r'<nav class="pg-products".*?</nav>', page, re.S).group(0)
    links = re.findall(r'<a href="([^"]+)"', tabs)
    assert links[links.index("/w/acme/playground/vision/") + 1] == "/w/acme/playground/voice/"
    assert re.search(r'aria-current="page"[^<]*<svg[^>]*>.*?</svg> Voice', tabs, re.S)
    assert '<option value="aria" selected>Aria (ru, en)</option>' in page
    assert '<option value="orion">Orion (en)</option>' in page
    assert 'name="input"' in page and 'name="file"' in page and 'id="voice-record"' in page
    assert '<option value="mp3" selected>MP3</option>' in page and 'value="pcm"' not in page
    assert "Speak and listen" in page
    assert "<script>" not in page and " onclick=" not in page


def test_a_viewer_may_not_speak_and_a_stranger_cannot_see_the_page(
    member_of_acme, charlie_client, upstream_fleet
):
    viewer = signed_in(member_of_acme(MemberRole.VIEWER))
    assert viewer.get(PAGE).status_code == 403
    assert speak(viewer).status_code == 403
    assert charlie_client.get(PAGE).status_code == 404
    assert speak(charlie_client).status_code == 404
    assert not VoiceRun.objects.exists()


def test_speech_streams_and_is_kept_with_its_cost(alice, alice_client, upstream_fleet, asgi_server):
    response = speak(alice_client)
    assert response.status_code == 200
    page = response.content.decode()
    (src,) = sources(page)
    assert src.startswith(PAGE + "stream/?ticket=") and " autoplay" in page
    # Nothing is called or kept until the player asks for its audio.
    assert not VoiceRun.objects.exists()
    (status,) = statuses(page)
    assert "Speaking…" in alice_client.get(status, **HTMX).content.decode()

    answer = listen(asgi_server, alice_client, src)
    assert answer.status_code == 200 and answer.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(answer.content)) as reader:
        # A short sentence takes espeak-ng a second or few at its default rate: a length
        # far outside that is a header or a relay that lost audio. (Its exact length
        # depends on the espeak-ng build, so it is bounded, not fixed.)
        assert 1.0 < reader.getnframes() / reader.getframerate() < 10.0
    run = VoiceRun.objects.get()
    assert run.user == alice and run.workspace.slug == "acme" and run.kind == "speech"
    assert run.request == {"input": TEXT, "voice": "aria", "response_format": "wav", "speed": 1.0}
    assert run.file_id.startswith("file_") and run.duration_ms > 0
    settle_books()
    record = UsageRecord.objects.get(request_id=run.request_id)
    assert record.source == "playground" and record.user_id == alice.pk
    assert record.product == "audio" and record.units == {"speech_character": len(TEXT)}
    assert run.cost == record.cost > 0

    shown = alice_client.get(status, **HTMX).content.decode()
    assert 'class="media-cost"' in shown and "ms</span>" in shown
    assert (
        f'href="/v1/files/{run.file_id}/content?' in shown and 'download="speech-aria.wav"' in shown
    )
    assert re.search(r'<nav id="voice-history" [^>]*hx-swap-oob="true"', shown)

    # Asked again, the ticket answers with the kept file rather than speaking again.
    again = listen(asgi_server, alice_client, src)
    assert again.history and again.history[0].status_code == 302
    assert again.content == answer.content
    assert VoiceRun.objects.count() == 1
    settle_books()
    assert UsageRecord.objects.filter(product="audio").count() == 1


def test_two_voices_are_compared_side_by_side(alice_client, upstream_fleet, asgi_server):
    response = speak(alice_client, voice="aria", voice_b="orion", action="compare")
    assert response.status_code == 200
    page = response.content.decode()
    first, second = sources(page)
    assert 'data-count="2"' in page and page.count(" autoplay") == 1
    for src in (second, first):
        assert listen(asgi_server, alice_client, src).status_code == 200
    runs = list(VoiceRun.objects.order_by("pk"))
    assert len(runs) == 2 and runs[0].group and runs[0].group == runs[1].group
    assert {r.request["voice"] for r in runs} == {"aria", "orion"}

    reopened = alice_client.get(f"{PAGE}?run={runs[0].pk}").content.decode()
    names = re.findall(r'<figcaption class="voice-player-name">.*?</svg> (\w+)</figcaption>',
                       reopened, re.S)  # fmt: skip
    assert names == ["Aria", "Orion"]
    assert len(re.findall(r'<audio controls preload="auto" src="/v1/files/', reopened)) == 2
    assert '<option value="orion" selected>' in reopened
    history = re.search(r'<nav id="voice-history".*?</nav>', reopened, re.S).group(0)
    assert history.count('class="pg-history-item') == 1 and "Compare · aria, orion" in history


@pytest.mark.parametrize(
    ("fields", "error_id", "message"),
    [
        ({"input": "   "}, "voice-input-error", "Write the text to speak."),
        ({"input": "x" * 4097}, "voice-input-error", "Keep the text to 4,096 characters."),
        ({"speed": "9"}, "voice-speed-error", "Choose a speed between 0.25 and 4."),
        ({"speed": "fast"}, "voice-speed-error", "Choose a speed between 0.25 and 4."),
        ({"voice": "nobody"}, "voice-voice-error", "Pick one of the voices."),
        ({"action": "compare"}, "voice-voice-b-error", "Pick a second voice to compare with."),
        ({"action": "compare", "voice_b": "aria"}, "voice-voice-b-error",
         "Pick a voice other than the first."),
    ],
)  # fmt: skip
def test_bad_speech_input_gets_a_message_beside_the_field(
    alice_client, upstream_fleet, fields, error_id, message
):
    response = speak(alice_client, **fields)
    assert response.status_code == 400
    page = response.content.decode()
    assert f'<ul class="errorlist" id="{error_id}"><li>{message}</li></ul>' in page
    assert response["HX-Retarget"] == "#voice-speech-form" and response["HX-Reswap"] == "outerHTML"
    assert not sources(page)
    assert not VoiceRun.objects.exists()


def test_a_forged_or_anothers_ticket_is_not_found(
    alice_client, bob_client, upstream_fleet, asgi_server
):
    (src,) = sources(speak(alice_client).content.decode())
    assert listen(asgi_server, bob_client, src).status_code == 404
    assert listen(asgi_server, alice_client, src[:-3] + "abc").status_code == 404
    cache.clear()  # as after a quarter of an hour: the body it stood for is gone
    assert listen(asgi_server, alice_client, src).status_code == 404
    assert not VoiceRun.objects.exists()


def test_an_upstream_failure_is_shown_by_the_player_and_nothing_is_kept(
    alice_client, upstream_fleet, asgi_server, start_simulator, make_fleet
):
    from upstream.fleet import set_fleet

    page = speak(alice_client).content.decode()
    (src,), (status,) = sources(page), statuses(page)
    previous = set_fleet(make_fleet(start_simulator(fail_status=503), names=["failing"]))
    try:
        answer = listen(asgi_server, alice_client, src)
    finally:
        set_fleet(previous)
    assert answer.status_code == 503
    shown = text_of(alice_client.get(status, **HTMX).content.decode())
    assert "The upstream is unavailable (503)" in shown
    assert not VoiceRun.objects.exists()
    # The ticket is spent: the player asking again does not call again.
    assert listen(asgi_server, alice_client, src).status_code == 409


def test_an_uploaded_wav_is_transcribed_to_its_spoken_text(alice, alice_client, spoken):
    _, audio = spoken
    upload = io.BytesIO(audio)
    upload.name = "hello.wav"
    response = alice_client.post(TRANSCRIBE, {"file": upload}, **HTMX)
    assert response.status_code == 200
    page = response.content.decode()
    heard = VoiceRun.objects.get(kind="transcription")
    assert heard.result["text"] == TEXT and heard.result["language"] == "en"
    assert heard.result["duration"] > 1
    assert f'<p class="voice-transcript">{TEXT}</p>' in page
    assert (
        "Transcript of hello.wav" in page
        and '<span class="chip" title="Language">en</span>' in page
    )
    settle_books()
    record = UsageRecord.objects.get(request_id=heard.request_id)
    assert record.units["transcription_second"] >= 2 and record.user_id == alice.pk
    assert heard.cost == record.cost > 0 and heard.duration_ms > 0
    assert 'class="media-cost"' in page and "s of audio" in page
    assert re.search(r'<nav id="voice-history" [^>]*hx-swap-oob="true"', page)
    assert re.search(r'<form id="voice-transcribe-form" [^>]*hx-swap-oob="true"', page, re.S)


def test_a_recording_the_simulator_did_not_make_is_described_with_its_length(
    alice_client, upstream_fleet
):
    page = alice_client.post(TRANSCRIBE, {"file": wav(1.5), "language": "de"}, **HTMX)
    heard = VoiceRun.objects.get()
    assert heard.result["text"] == "(simulated transcription of 1.5 seconds of audio)"
    assert heard.result["language"] == "de" and heard.request["language"] == "de"
    assert "(simulated transcription of 1.5 seconds of audio)" in page.content.decode()


def test_bad_transcription_input_gets_a_message_beside_the_field(alice_client, upstream_fleet):
    nothing = alice_client.post(TRANSCRIBE, {"language": ""}, **HTMX)
    assert nothing.status_code == 400
    assert nothing["HX-Retarget"] == "#voice-transcribe-form"
    assert (
        'id="voice-file-error" role="alert">Choose an audio file, or record one with the microphone.'
        in nothing.content.decode()
    )
    notes = io.BytesIO(b"these are just some words, not sound")
    notes.name = "notes.wav"
    refused = alice_client.post(TRANSCRIBE, {"file": notes}, **HTMX)
    assert refused.status_code == 400
    error = re.search(r'id="voice-file-error" role="alert">([^<]*)<', refused.content.decode())
    assert "is not audio: send WAV, MP3, OGG, FLAC, WebM or M4A." in html.unescape(error.group(1))
    language = alice_client.post(TRANSCRIBE, {"file": wav(1), "language": "x"}, **HTMX)
    assert language.status_code == 400
    assert 'id="voice-language-error"' in language.content.decode()
    assert not VoiceRun.objects.exists()
    settle_books()
    assert not UsageRecord.objects.filter(product="audio").exists()


def test_another_members_or_workspaces_run_is_not_found(
    alice_client, bob_client, charlie_client, spoken
):
    run, _ = spoken
    assert alice_client.get(f"{PAGE}?run={run.pk}").status_code == 200
    for client in (bob_client, charlie_client):
        assert client.get(f"{PAGE}?run={run.pk}").status_code == 404
        assert client.get(f"{CODE}?run={run.pk}").status_code == 404
        assert client.post(f"{PAGE}runs/{run.pk}/delete/", **HTMX).status_code == 404
    assert TEXT not in bob_client.get(PAGE).content.decode()
    assert bob_client.get(f"{PAGE}?run=abc").status_code == 404
    assert VoiceRun.objects.filter(pk=run.pk).exists()


def test_runs_show_as_code_from_their_exact_request(alice_client, spoken):
    run, audio = spoken
    speech = text_of(alice_client.get(f"{CODE}?run={run.pk}").content.decode())
    assert "curl http://testserver/v1/audio/speech" in speech and "--output speech.wav" in speech
    assert (
        f'"input": "{TEXT}"' in speech and "client.audio.speech.with_streaming_response" in speech
    )
    upload = io.BytesIO(audio)
    upload.name = "hello.wav"
    alice_client.post(TRANSCRIBE, {"file": upload, "language": "en"}, **HTMX)
    heard = VoiceRun.objects.get(kind="transcription")
    transcription = text_of(alice_client.get(f"{CODE}?run={heard.pk}").content.decode())
    assert "curl http://testserver/v1/audio/transcriptions" in transcription
    assert "-F file=@hello.wav" in transcription and "-F language=en" in transcription
    assert "client.audio.transcriptions.create(" in transcription
    draft = alice_client.post(CODE, {"input": "Draft", "voice": "nova", "speed": "1.5",
                                     "response_format": "mp3"}, **HTMX)  # fmt: skip
    assert '"voice": "nova"' in text_of(draft.content.decode())
    bad = alice_client.post(CODE, {"input": "", "voice": "nova", "speed": "1"}, **HTMX)
    assert "Fill in the form first: Write the text to speak." in text_of(bad.content.decode())


def test_a_voice_sample_is_spoken_once_then_its_file_is_played(alice_client, upstream_fleet):
    first = alice_client.post(PREVIEW, {"voice": "nova"}, **HTMX)
    assert first.status_code == 200 and first["content-type"] == "audio/mpeg"
    again = alice_client.post(PREVIEW, {"voice": "nova"}, **HTMX)
    assert again.status_code == 302 and again["location"].startswith("/v1/files/file_")
    assert alice_client.post(PREVIEW, {"voice": "nobody"}, **HTMX).status_code == 400
    assert not VoiceRun.objects.exists()


def test_a_member_deletes_a_comparison_whole(alice_client, upstream_fleet, asgi_server):
    page = speak(alice_client, voice="sol", voice_b="luna", action="compare").content.decode()
    for src in sources(page):
        listen(asgi_server, alice_client, src)
    first = VoiceRun.objects.first()
    response = alice_client.post(f"{PAGE}runs/{first.pk}/delete/", **HTMX)
    assert response.status_code == 200 and "No voice runs yet." in response.content.decode()
    assert not VoiceRun.objects.exists()
