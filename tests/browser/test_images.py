"""The Images page in Chromium, against the simulator: pictures render, one guides the next run,
references come from a picker, the clipboard or a drop, and a run reopens from the history."""

import base64
import io

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from playground.models import ImageRun
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

PAGE = "/w/acme/playground/images/"


def _open(new_page, color_scheme: str = "light", width: int = 1440, height: int = 900) -> Page:
    page = new_page(color_scheme=color_scheme, width=width, height=height)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto(PAGE)
    expect(page.get_by_role("heading", name="Images")).to_be_visible()
    return page


def _generate(page: Page, prompt: str, count: int = 2) -> None:
    runs = page.locator(".media-run").count()
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Size", exact=True).select_option("1024x1024")
    page.get_by_label("Quality", exact=True).select_option("low")
    page.get_by_label("Count", exact=True).fill(str(count))
    page.get_by_role("button", name="Generate").click()
    expect(page.locator(".media-run")).to_have_count(runs + 1, timeout=30_000)


def _rendered(page: Page, selector: str) -> list[int]:
    """The natural widths of the pictures `selector` finds, once each has loaded."""
    page.wait_for_function(
        "s => [...document.querySelectorAll(s)].every(i => i.complete && i.naturalWidth > 0)",
        arg=selector,
    )
    return page.eval_on_selector_all(selector, "all => all.map(i => i.naturalWidth)")


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_two_images_render_and_one_guides_the_next_run(alice, new_page, upstream_fleet):
    page = _open(new_page)
    expect(page.get_by_role("link", name="Images")).to_have_attribute("aria-current", "page")
    _generate(page, "A red kite over green hills")
    first = page.locator(".media-run").first
    expect(first.locator(".media-tile img")).to_have_count(2)
    assert _rendered(page, ".media-run .media-tile img") == [1024, 1024]
    expect(first.locator(".media-cost")).to_contain_text("$")
    expect(first.locator(".media-time")).to_contain_text("ms")

    # Copy link puts the full, signed link on the clipboard.
    first.get_by_role("button", name="Copy link").nth(1).click()
    link = page.evaluate("navigator.clipboard.readText()")
    assert link.startswith(page.url.split("/w/")[0] + "/v1/files/file_") and "signature=" in link

    run = ImageRun.objects.get()
    first.get_by_role("button", name="Use as reference").nth(1).click()
    expect(page.locator("#img-refs .media-ref")).to_have_count(1)
    assert _rendered(page, "#img-refs img") == [1024]
    screenshot(page, "images-reference-light")

    _generate(page, "The same kite at night")
    latest = page.locator(".media-run").first
    expect(latest).to_contain_text("1 reference")
    assert _rendered(page, ".media-run .media-tile img") == [1024] * 4
    newest = ImageRun.objects.first()
    assert newest.request["reference_images"] == [run.file_ids[1]]
    assert newest.request["prompt"] == "The same kite at night"
    screenshot(page, "images-light")
    assert page.errors == []


def test_a_run_reopens_from_the_history(alice, new_page, upstream_fleet):
    page = _open(new_page)
    _generate(page, "A lighthouse at dusk", count=1)
    _generate(page, "A harbour at dawn", count=2)
    older = ImageRun.objects.last()

    page.get_by_role("button", name="History").click()
    history = page.locator("#img-history")
    expect(history.get_by_role("link")).to_have_count(2)
    screenshot(page, "images-history-light")
    history.get_by_role("link", name="A lighthouse at dusk").click()
    page.wait_for_url(f"**{PAGE}?run={older.pk}")
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("A lighthouse at dusk")
    expect(page.get_by_label("Count", exact=True)).to_have_value("1")
    expect(page.locator(".media-run")).to_have_count(1)
    assert _rendered(page, ".media-tile img") == [1024]

    # View code shows the run's exact request.
    page.locator(".media-run").get_by_role("button", name="Code").click()
    dialog = page.locator("#img-code-pop")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#code-curl")).to_contain_text("/v1/images/generations")
    expect(dialog.locator("#code-curl")).to_contain_text('"prompt": "A lighthouse at dusk"')
    dialog.locator("summary", has_text="Python").click()
    expect(dialog.locator("#code-python")).to_contain_text("client.images.generate(")
    screenshot(page, "images-code-light")
    page.locator("#img-code-pop").get_by_role("button", name="Close").click()

    # The other run is deleted from the history; Ctrl+Enter makes a new one.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="History").click()
    history.get_by_role("button", name="Delete the run “A harbour at dawn”").click()
    expect(history.get_by_role("link")).to_have_count(1)
    assert ImageRun.objects.count() == 1
    page.keyboard.press("Escape")
    page.get_by_label("Prompt", exact=True).fill("A lighthouse at night")
    page.get_by_label("Prompt", exact=True).press("Control+Enter")
    expect(page.locator(".media-run")).to_have_count(2)
    assert ImageRun.objects.first().request["prompt"] == "A lighthouse at night"
    assert page.errors == []


def test_references_come_from_the_picker_the_clipboard_and_a_drop(
    alice, new_page, upstream_fleet, tmp_path
):
    page = _open(new_page, color_scheme="dark")
    picked = tmp_path / "picked.png"
    picked.write_bytes(_png((40, 80, 220)))
    page.locator("#img-upload").set_input_files(str(picked))
    expect(page.locator("#img-refs .media-ref")).to_have_count(1)

    pasted = base64.b64encode(_png((220, 40, 40))).decode()
    page.evaluate(
        """data => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
            document.getElementById("id_prompt").dispatchEvent(
                new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }));
        }""",
        pasted,
    )
    expect(page.locator("#img-refs .media-ref")).to_have_count(2)

    dropped = base64.b64encode(_png((40, 170, 60))).decode()
    drop = """data => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
        transfer.items.add(new File([bytes], "again.png", { type: "image/png" }));
        document.getElementById("img-refs").dispatchEvent(
            new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
    }"""
    page.evaluate(drop, dropped)
    expect(page.locator("#img-refs .media-ref")).to_have_count(4)
    assert _rendered(page, "#img-refs img") == [64] * 4

    # A fifth is refused beside the references, and taking one away makes room again.
    page.locator("#img-upload").set_input_files(str(picked))
    expect(page.locator("#img-ref-error")).to_have_text(
        "Use at most 4 reference images: remove one first."
    )
    expect(page.locator("#img-refs .media-ref")).to_have_count(4)
    page.locator("#img-refs .media-ref").first.get_by_role(
        "button", name="Remove this reference"
    ).click()
    expect(page.locator("#img-refs .media-ref")).to_have_count(3)
    screenshot(page, "images-references-dark")

    _generate(page, "A kite made of these colours", count=1)
    assert len(ImageRun.objects.get().request["reference_images"]) == 3
    assert _rendered(page, ".media-tile img") == [1024]
    screenshot(page, "images-dark")
    assert page.errors == []


def test_bad_input_is_shown_beside_the_field(alice, new_page, upstream_fleet):
    page = _open(new_page)
    page.get_by_label("Count", exact=True).fill("7")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#img-prompt-error")).to_have_text("Describe the image to make.")
    expect(page.locator("#img-n-error")).to_have_text("Make between 1 and 4 images.")
    assert not ImageRun.objects.exists()


def test_the_page_fits_a_phone(alice, new_page, upstream_fleet):
    page = _open(new_page, width=375, height=812)
    tabs = page.locator(".pg-products")
    for name in ("Chat", "Images", "Vision"):
        expect(tabs.get_by_role("link", name=name)).to_be_visible()
    # The strip of ten tabs scrolls sideways; the page's own is scrolled into sight.
    strip, current = tabs.bounding_box(), tabs.locator("[aria-current='page']").bounding_box()
    assert tabs.evaluate("strip => strip.scrollLeft") > 0
    assert strip["x"] <= current["x"]
    assert current["x"] + current["width"] <= strip["x"] + strip["width"]
    _generate(page, "A small boat on a calm lake", count=2)
    assert _rendered(page, ".media-tile img") == [1024, 1024]
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    screenshot(page, "images-phone")
    tabs.get_by_role("link", name="Chat").click()
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    screenshot(page, "chat-phone")
    assert page.errors == []
