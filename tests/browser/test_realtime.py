"""The Realtime page in Chromium, against the simulator: push to talk sends the (fake)
microphone's speech, its transcript appears, the answer's audio plays as it arrives,
speaking again stops it (barge-in), and the event inspector lists the events.

The fake microphone plays a WAV that the simulator speaks (see test_voice.py), so the
simulator knows the words when it hears them through the browser's capture and resampling.
"""

import re

import pytest
from playwright.sync_api import Page, expect

from console.models import UsageRecord
from tests.browser.conftest import screenshot, sign_in
from tests.browser.test_voice import SPOKEN, browser, microphone_wav  # noqa: F401
from tests.conftest import PASSWORD, settle_books

pytestmark = pytest.mark.browser

PAGE = "/w/acme/playground/realtime/"
HEARD = "() => Number(document.getElementById('rt-meter').dataset.level || 0) > 0.02"
PLAYING = "() => document.getElementById('rt-page').dataset.playing === 'true'"


def _open(new_page, color_scheme: str = "light") -> Page:
    page = new_page(color_scheme=color_scheme, width=1440, height=900)
    page.context.grant_permissions(["microphone"])
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto(PAGE)
    expect(page.get_by_role("heading", name="Realtime", exact=True)).to_be_visible()
    return page


def _connect(page: Page) -> None:
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#rt-state")).to_have_text(re.compile(r"^Connected"))
    expect(page.locator("#rt-talk")).to_be_enabled()


def _say_it(page: Page) -> None:
    """Hold the talk button while the microphone speaks, then let go."""
    page.wait_for_function(HEARD)
    page.locator("#rt-talk").hover()
    page.mouse.down()
    expect(page.locator("#rt-talk")).to_have_attribute("aria-pressed", "true")
    page.wait_for_timeout(3500)
    page.mouse.up()


def test_push_to_talk_transcribes_plays_the_answer_and_barge_in_stops_it(
    alice, new_page, upstream_fleet
):
    page = _open(new_page)
    expect(page.get_by_role("link", name="Realtime")).to_have_attribute("aria-current", "page")
    expect(page.get_by_label("Voice", exact=True)).to_have_value("aria")
    _connect(page)
    _say_it(page)

    you = page.locator(".rt-turn.rt-user .rt-text").first
    expect(you).to_have_text(SPOKEN, timeout=30_000)
    expect(page.locator(".rt-turn.rt-assistant .rt-text").first).not_to_be_empty()
    # The answer's audio arrives and plays; the latency from the end of speech is shown.
    page.wait_for_function(PLAYING, timeout=30_000)
    assert int(page.locator("#rt-audio-out").get_attribute("data-bytes")) > 0
    expect(page.locator("#rt-latency")).to_have_text(re.compile(r"^\d+ ms$"))
    screenshot(page, "realtime-light")

    # Speaking again stops the answer at once, and the rest of it is dropped.
    page.locator("#rt-talk").hover()
    page.mouse.down()
    expect(page.locator("#rt-page")).to_have_attribute("data-playing", "false", timeout=500)
    expect(page.locator("#rt-page")).to_have_attribute("data-barge-ins", "1")
    expect(page.locator(".rt-turn.rt-assistant").first).to_have_class(re.compile("is-interrupted"))
    page.mouse.up()

    # The inspector lists the events both ways, repeats collapsed into a count.
    def events(kind: str):
        return page.locator(f'#rt-events .rt-event[data-type="{kind}"]')

    expect(events("session.created")).to_have_count(1)
    expect(events("session.created")).to_have_attribute("data-direction", "in")
    appends = events("input_audio_buffer.append").first
    expect(appends).to_have_attribute("data-direction", "out")
    expect(appends.locator(".rt-count")).to_have_text(re.compile(r"^×\d+$"))
    deltas = events("response.audio.delta").first
    expect(deltas.locator(".rt-count")).to_be_visible()
    expect(events("conversation.item.input_audio_transcription.completed")).not_to_have_count(0)
    deltas.locator("summary").click()
    expect(deltas.locator("pre")).to_contain_text('"bytes"')
    expect(page.locator("#rt-cost")).to_have_text(re.compile(r"^\$0\.06"))

    # Voice activity can be switched on during the session.
    page.get_by_label("Voice activity").check()
    expect(page.locator("#rt-talk")).to_be_disabled()
    expect(events("session.update")).to_have_count(2)
    expect(events("session.update").last.locator("summary")).to_be_visible()
    events("session.update").last.locator("summary").click()
    expect(events("session.update").last.locator("pre")).to_contain_text("server_vad")

    page.get_by_role("button", name="Disconnect").click()
    expect(page.locator("#rt-state")).to_have_text("Session ended")
    settle_books()
    record = UsageRecord.objects.get(product="realtime")
    assert (record.source, record.user_id) == ("playground", alice.pk)
    assert record.units["audio_in_seconds"] > 3 and record.units["audio_out_seconds"] > 0
    assert page.errors == []


def test_the_page_in_the_dark_theme(alice, new_page, upstream_fleet):
    page = _open(new_page, "dark")
    _connect(page)
    _say_it(page)
    expect(page.locator(".rt-turn.rt-user .rt-text").first).to_have_text(SPOKEN, timeout=30_000)
    page.wait_for_function(PLAYING, timeout=30_000)
    screenshot(page, "realtime-dark")
    assert page.errors == []
