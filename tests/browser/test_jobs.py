"""The Music and Video pages in Chromium, against the simulator: a job appears at once as a
card whose progress moves without a reload, survives a reload, and plays when it is done;
a cancelled job is not charged; a job that finishes while the member is on another page
of the console is told there; with no websocket the cards keep themselves up to date."""

import io
import re

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from console import ledger
from console.models import Hold, UsageRecord
from gateway.models import Job
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

MUSIC = "/w/acme/playground/music/"
VIDEO = "/w/acme/playground/video/"


def _open(new_page, path: str, *, job_seconds: float, color_scheme="light", width=1440) -> Page:
    page = new_page(color_scheme=color_scheme, width=width, height=900)
    # The simulator's jobs take as long as the caller's header says (passed on by the
    # console only when the simulator is its upstream).
    page.context.set_extra_http_headers({"x-sim-job-seconds": str(job_seconds)})
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto(path)
    expect(page.locator("#job-live")).to_have_text("Live")
    return page


def _progress(card) -> int:
    return int(card.locator("progress").get_attribute("value"))


def _start_music(page: Page, prompt: str, seconds: int = 3) -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Genre").fill("ambient")
    page.get_by_label("Mood").fill("calm")
    page.get_by_label("Style").fill("solo piano")
    page.get_by_label("Length (seconds)").fill(str(seconds))
    page.get_by_label("Lyrics").fill("Rain on the window\nlight on the floor")
    page.get_by_role("button", name="Start").click()


def _playable(page: Page, selector: str) -> dict:
    page.wait_for_function(
        "s => { const m = document.querySelector(s); return m && m.readyState >= 1 && m.duration > 0; }",
        arg=selector,
        timeout=20_000,
    )
    return page.eval_on_selector(selector, "m => ({ready: m.readyState, duration: m.duration})")


def test_a_music_job_moves_live_survives_a_reload_and_plays(alice, acme, new_page, upstream_fleet):
    page = _open(new_page, MUSIC, job_seconds=8)
    expect(page.get_by_role("link", name="Music")).to_have_attribute("aria-current", "page")
    _start_music(page, "A calm piano piece for a rainy morning")
    card = page.locator(".job-card").first
    expect(card).to_be_visible()
    expect(card.locator("[data-job-status]")).to_have_text(re.compile("Queued|Running"))
    expect(card.locator(".media-cost")).to_contain_text("up to $")
    job = Job.objects.get()
    assert job.params["genre"] == "ambient" and job.params["lyrics"].startswith("Rain")
    assert job.user_id == alice.pk and job.source == "playground"

    # The progress bar moves without a reload, and the elapsed time counts.
    first = _progress(card)
    page.wait_for_function(
        "v => Number(document.querySelector('.job-card progress')?.value) > v", arg=first
    )
    expect(card.locator(".media-time")).not_to_have_text("0 s")
    screenshot(page, "music-running-light")

    # A reload mid-job shows it still running, and it goes on to finish.
    page.reload()
    card = page.locator(f"#job-{job.pk}")
    expect(card.locator("[data-job-status]")).to_have_text(re.compile("Queued|Running"))
    expect(card.locator("[data-job-status]")).to_have_text("Succeeded", timeout=30_000)
    played = _playable(page, f"#job-{job.pk} audio")
    assert played["duration"] > 0
    expect(card.get_by_text("Rain on the window")).to_be_hidden()
    card.get_by_text("Lyrics").click()
    expect(card.get_by_text("Rain on the window")).to_be_visible()
    expect(card.get_by_role("link", name="Download")).to_have_attribute(
        "download", re.compile(r"\.wav$")
    )
    job.refresh_from_db()
    assert job.status == "succeeded" and job.cost > 0
    expect(card.locator(".media-cost")).to_have_text(re.compile(r"^\$"))
    assert UsageRecord.objects.get(request_id=job.request_id).source == "playground"
    screenshot(page, "music-done-light")

    # History reopens it into the form; its code is the request it sent.
    page.get_by_role("button", name="History").click()
    page.locator("#job-history a").first.click()
    expect(page.get_by_label("Genre")).to_have_value("ambient")
    card = page.locator(f"#job-{job.pk}")
    card.get_by_role("button", name="Code").click()
    expect(page.locator("#job-code-pop")).to_contain_text("/audio/music")
    expect(page.locator("#job-code-pop")).to_contain_text("solo piano")
    assert page.errors == []


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 36), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_video_from_an_uploaded_frame_plays_and_a_cancelled_one_costs_nothing(
    alice, acme, new_page, upstream_fleet
):
    start = ledger.balance_of(acme)
    page = _open(new_page, VIDEO, job_seconds=30)
    expect(page.get_by_role("link", name="Video")).to_have_attribute("aria-current", "page")

    # A long job, cancelled mid-way: its hold is released and nothing is charged.
    page.get_by_label("Prompt", exact=True).fill("A slow pan over a harbour at dawn")
    page.get_by_role("button", name="Start").click()
    card = page.locator(".job-card").first
    expect(card.locator("[data-job-status]")).to_have_text(re.compile("Queued|Running"))
    long_job = Job.objects.get()
    assert Hold.objects.filter(request_id=long_job.request_id).exists()
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Cancel").click()
    expect(card.locator("[data-job-status]")).to_have_text("Cancelled")
    expect(card.locator(".media-cost")).to_have_text("$0.00")
    long_job.refresh_from_db()
    assert long_job.status == "cancelled" and long_job.cost == 0
    assert not Hold.objects.filter(request_id=long_job.request_id).exists()
    assert ledger.balance_of(acme) == start

    # A short one from an uploaded first frame, 9:16, 1080p: it plays, with the frame as poster.
    page.context.set_extra_http_headers({"x-sim-job-seconds": "2"})
    page.get_by_label("Prompt", exact=True).fill("A paper boat drifting down a rainy street")
    page.get_by_label("Upload an image").set_input_files(
        files=[{"name": "frame.png", "mimeType": "image/png", "buffer": _png((200, 60, 40))}]
    )
    page.get_by_label("Aspect ratio").select_option("9:16")
    page.get_by_label("Resolution").select_option("1080p")
    page.get_by_role("button", name="Start").click()
    expect(page.locator(".job-card")).to_have_count(2)
    job = Job.objects.exclude(pk=long_job.pk).get()
    assert job.params["image_to_video"] is True and job.params["aspect_ratio"] == "9:16"
    card = page.locator(f"#job-{job.pk}")
    expect(card.locator("[data-job-status]")).to_have_text("Succeeded", timeout=30_000)
    played = _playable(page, f"#job-{job.pk} video")
    assert played["duration"] > 0
    expect(card.locator("video")).to_have_attribute("poster", re.compile("/v1/files/file_"))
    expect(card).to_contain_text("from an image")
    job.refresh_from_db()
    assert job.cost > 0 and ledger.balance_of(acme) == start - job.cost
    screenshot(page, "video-done-light")
    assert page.errors == []


def test_a_job_that_finishes_on_another_page_is_told_there(alice, acme, new_page, upstream_fleet):
    page = _open(new_page, MUSIC, job_seconds=4)
    _start_music(page, "A short jingle", seconds=2)
    expect(page.locator(".job-card")).to_have_count(1)
    job = Job.objects.get()
    page.get_by_role("link", name="Usage").click()
    page.wait_for_url("**/usage/")
    toast = page.locator(".job-toast")
    expect(toast).to_contain_text("Your music job is ready", timeout=30_000)
    expect(toast).to_contain_text("A short jingle")
    screenshot(page, "job-toast-light")
    toast.get_by_role("link", name="Open").click()
    expect(page.locator(f"#job-{job.pk} [data-job-status]")).to_have_text("Succeeded")

    # With nothing unfinished, another page opens no socket and shows no watcher.
    page.goto("/w/acme/usage/")
    expect(page.locator("#job-toasts")).to_have_count(0)
    assert page.errors == []


def test_without_the_websocket_the_cards_poll_for_themselves(alice, acme, new_page, upstream_fleet):
    page = new_page()
    page.context.set_extra_http_headers({"x-sim-job-seconds": "3"})
    # Every socket to the job centre is refused, as by a proxy that does not pass them on.
    page.route_web_socket(re.compile(r".*/ws/jobs/.*"), lambda ws: ws.close(code=1011))
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto(MUSIC)
    expect(page.locator("#job-live")).to_have_text("Checking every few seconds")
    _start_music(page, "A tune heard without a socket", seconds=2)
    card = page.locator(".job-card").first
    expect(card.locator("[data-job-status]")).to_have_text("Succeeded", timeout=30_000)
    _playable(page, ".job-card audio")


@pytest.mark.parametrize(("scheme", "width"), [("dark", 1440), ("light", 390), ("dark", 390)])
def test_the_pages_in_both_themes_and_at_phone_width(
    alice, acme, new_page, upstream_fleet, scheme, width
):
    page = _open(new_page, MUSIC, job_seconds=30, color_scheme=scheme, width=width)
    _start_music(page, "A song for the screenshots", seconds=4)
    expect(page.locator(".job-card progress")).to_be_visible()
    page.set_extra_http_headers({"x-sim-job-seconds": "1"})
    _start_music(page, "A finished one", seconds=2)
    expect(page.locator(".job-card audio")).to_have_count(1, timeout=30_000)
    screenshot(page, f"music-{scheme}-{width}")
    page.goto(VIDEO)
    page.get_by_label("Prompt", exact=True).fill("A lighthouse in a storm")
    page.get_by_role("button", name="Start").click()
    expect(page.locator(".job-card video")).to_have_count(1, timeout=30_000)
    screenshot(page, f"video-{scheme}-{width}")
    if width < 500:
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
    assert page.errors == []
