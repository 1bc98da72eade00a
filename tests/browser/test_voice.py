"""The Voice page in Chromium, against the simulator: a recording from the (fake) microphone is
transcribed, speech plays as it streams, two voices play side by side, bad input is named
beside its field, and a run reopens from the history.

Chromium's fake microphone plays a WAV that the simulator speaks with espeak-ng. The
simulator recognises its own speech by its rhythm of loudness, after the microphone,
the browser's resampling and its re-encoding: the transcript is what the WAV says.
"""

import os
import re

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from console.models import UsageRecord
from playground.models import VoiceRun
from tests.browser.conftest import CHROMIUM_ARGS, chromium_path, screenshot, sign_in
from tests.conftest import PASSWORD, settle_books

pytestmark = pytest.mark.browser

PAGE = "/w/acme/playground/voice/"
SPOKEN = "Testing the microphone, one two three."
LOUD = "() => Number(document.getElementById('voice-meter').dataset.level) > 0.4"
PLAYABLE = """s => {
  const players = [...document.querySelectorAll(s)];
  return players.length > 0 && players.every(a => Number.isFinite(a.duration) && a.duration > 0);
}"""


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory, simulator) -> str:
    """What the fake microphone says: a WAV that the session's simulator speaks (with
    espeak-ng), so that it knows the speech when it hears it again."""
    assert simulator.settings.use_espeak, "espeak-ng is needed: `make test` installs it"
    spoken = httpx.post(
        f"{simulator.base_url}/audio/speech",
        json={"input": SPOKEN, "voice": "aria", "response_format": "wav"},
        headers={"Authorization": f"Bearer {simulator.key}"},
        timeout=60,
    )
    spoken.raise_for_status()
    path = tmp_path_factory.mktemp("microphone") / "spoken.wav"
    path.write_bytes(spoken.content)
    return str(path)


@pytest.fixture(scope="module")
def browser(microphone_wav) -> Browser:
    """Chromium with a fake microphone that plays `microphone_wav`, allowed without asking
    (this module's own browser: the other tests' browser has no microphone)."""
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone_wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=args)
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def _open(new_page, color_scheme: str = "light", width: int = 1440, height: int = 900) -> Page:
    page = new_page(color_scheme=color_scheme, width=width, height=height)
    page.context.grant_permissions(["microphone"])
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto(PAGE)
    expect(page.get_by_role("heading", name="Voice", exact=True)).to_be_visible()
    return page


def _speak(page: Page, text: str, voice: str, *, compare_with: str = "", fmt: str = "mp3") -> None:
    cards = page.locator(".voice-card").count()
    page.get_by_label("Text", exact=True).fill(text)
    page.get_by_label("Voice", exact=True).select_option(voice)
    page.get_by_label("Format", exact=True).select_option(fmt)
    if compare_with:
        page.get_by_label("Second voice").select_option(compare_with)
        page.get_by_role("button", name="Compare", exact=True).click()
    else:
        page.get_by_role("button", name="Speak", exact=True).click()
    expect(page.locator(".voice-card")).to_have_count(cards + 1, timeout=30_000)


def test_a_recording_from_the_microphone_is_transcribed(alice, new_page, upstream_fleet):
    page = _open(new_page)
    expect(page.get_by_role("link", name="Voice")).to_have_attribute("aria-current", "page")
    page.get_by_role("button", name="Record", exact=True).click()
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_visible()
    # The level meter follows the microphone: the spoken WAV lifts it well above silence.
    page.wait_for_function(LOUD)
    screenshot(page, "voice-recording-light")
    page.wait_for_timeout(2000)
    page.get_by_role("button", name="Stop", exact=True).click()

    take = page.locator("#voice-take")
    expect(take).to_be_visible()
    page.wait_for_function(PLAYABLE, arg="#voice-take-audio")
    # Discarded, nothing is sent; recorded again and sent, it is transcribed.
    take.get_by_role("button", name="Discard").click()
    expect(take).to_be_hidden()
    assert not VoiceRun.objects.exists()
    page.get_by_role("button", name="Record", exact=True).click()
    page.wait_for_function(LOUD)
    page.wait_for_timeout(2000)
    page.get_by_role("button", name="Stop", exact=True).click()
    page.wait_for_function(PLAYABLE, arg="#voice-take-audio")
    take.get_by_role("button", name="Send").click()

    card = page.locator(".voice-card").first
    expect(card.locator(".voice-transcript")).to_have_text(SPOKEN, timeout=30_000)
    expect(take).to_be_hidden()
    seconds = float(card.locator(".voice-duration").inner_text().split()[0])
    # Recorded from when the voice was first heard until Stop, two seconds later: the
    # length shown is that of the recording sent, give or take the browser's timing.
    assert 1.5 <= seconds <= 6
    expect(card.locator(".chip")).to_have_text("en")
    expect(card.locator(".voice-duration")).to_have_text(f"{seconds} s of audio")
    expect(card.locator(".media-cost")).to_contain_text("$")
    expect(card.locator(".media-time")).to_contain_text("ms")
    expect(card).to_contain_text("Transcript of recording.wav")
    run = VoiceRun.objects.get()
    assert run.kind == "transcription" and run.request["filename"] == "recording.wav"
    settle_books()
    assert UsageRecord.objects.get(request_id=run.request_id).cost == run.cost > 0
    screenshot(page, "voice-transcript-light")
    assert page.errors == []


def test_speech_plays_as_it_streams_and_a_voice_is_previewed(alice, new_page, upstream_fleet):
    page = _open(new_page)
    page.get_by_label("Voice", exact=True).select_option("nova")
    page.locator("#voice-speech-form").get_by_role("button", name="Preview").first.click()
    page.wait_for_function(
        "() => { const a = document.getElementById('voice-preview-audio');"
        " return a.src.startsWith('blob:') && a.currentTime > 0; }"
    )

    _speak(page, "The quick brown fox jumps over the lazy dog.", "orion")
    card = page.locator(".voice-card").first
    expect(card.locator("audio")).to_have_count(1)
    page.wait_for_function(PLAYABLE, arg=".voice-card:first-child audio")
    # It plays on its own, from the first bytes.
    page.wait_for_function("() => document.querySelector('.voice-card audio').currentTime > 0")
    status = card.locator(".voice-status")
    expect(status.locator(".media-cost")).to_contain_text("$", timeout=30_000)
    expect(status.locator(".media-time")).to_contain_text("ms")
    expect(status.get_by_role("link", name="Download")).to_have_attribute(
        "download", "speech-orion.mp3"
    )
    expect(card.locator(".voice-player-name")).to_have_text("Orion")
    run = VoiceRun.objects.get()
    assert run.request["voice"] == "orion" and run.request["response_format"] == "mp3"

    status.get_by_role("button", name="Code").click()
    dialog = page.locator("#voice-code-pop")
    expect(dialog.locator("#code-curl")).to_contain_text("/v1/audio/speech")
    expect(dialog.locator("#code-curl")).to_contain_text('"voice": "orion"')
    screenshot(page, "voice-code-light")
    dialog.get_by_role("button", name="Close").click()
    screenshot(page, "voice-speech-light")
    assert page.errors == []


@pytest.mark.parametrize("color_scheme", ["light", "dark"])
def test_two_voices_play_side_by_side_and_reopen(alice, new_page, upstream_fleet, color_scheme):
    page = _open(new_page, color_scheme=color_scheme)
    _speak(page, "Which of us sounds better?", "aria", compare_with="sol", fmt="wav")
    card = page.locator(".voice-card").first
    expect(card.locator(".voice-player")).to_have_count(2)
    expect(card.locator(".voice-player-name")).to_have_text(["Aria", "Sol"])
    page.wait_for_function(PLAYABLE, arg=".voice-card:first-child audio")
    expect(card.locator(".voice-status .media-cost")).to_have_count(2, timeout=30_000)
    boxes = [p.bounding_box() for p in card.locator(".voice-player").all()]
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] < boxes[1]["x"]
    screenshot(page, f"voice-compare-{color_scheme}")

    page.get_by_role("button", name="History").click()
    history = page.locator("#voice-history")
    expect(history.get_by_role("link")).to_have_count(1)
    expect(history).to_contain_text("Compare · aria, sol")
    screenshot(page, f"voice-history-{color_scheme}")
    history.get_by_role("link").click()
    page.wait_for_url(re.compile(r".*\?run=\d+$"))
    expect(page.locator(".voice-player")).to_have_count(2)
    page.wait_for_function(PLAYABLE, arg=".voice-player audio")
    expect(page.get_by_label("Second voice")).to_have_value("sol")
    assert page.errors == []


def test_bad_input_is_named_beside_the_field(alice, new_page, upstream_fleet, tmp_path):
    page = _open(new_page)
    page.get_by_role("button", name="Speak", exact=True).click()
    expect(page.locator("#voice-input-error")).to_have_text("Write the text to speak.")
    page.get_by_role("button", name="Transcribe", exact=True).click()
    expect(page.locator("#voice-file-error")).to_have_text(
        "Choose an audio file, or record one with the microphone."
    )
    notes = tmp_path / "notes.mp3"
    notes.write_text("these are words, not sound")
    page.locator("#voice-file").set_input_files(notes)
    page.get_by_role("button", name="Transcribe", exact=True).click()
    expect(page.locator("#voice-file-error")).to_contain_text("is not audio")
    screenshot(page, "voice-errors-light")
    assert not VoiceRun.objects.exists()


def test_the_page_fits_a_phone(alice, new_page, upstream_fleet):
    page = _open(new_page, width=375, height=812)
    tabs = page.locator(".pg-products")
    for name in ("Chat", "Images", "Vision", "Voice"):
        expect(tabs.get_by_role("link", name=name)).to_be_attached()
    _speak(page, "Small screens speak too.", "luna", compare_with="nova")
    page.wait_for_function(PLAYABLE, arg=".voice-card:first-child audio")
    expect(page.locator(".voice-status .media-cost")).to_have_count(2, timeout=30_000)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    screenshot(page, "voice-phone")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "voice-phone-dark")
