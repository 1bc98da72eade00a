"""The Vision page in Chromium, against the simulator: the box is drawn over the picture where
the red square is, grid cells cover it, and a generated image can be picked."""

import io

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect

from tests.browser.conftest import screenshot, sign_in
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

PAGE = "/w/acme/playground/vision/"
SIZE = (400, 300)
SQUARE = (240, 60, 319, 139)  # left, top, right, bottom (inclusive): 80 x 80 pixels


def _open(new_page, color_scheme: str = "light", width: int = 1440, height: int = 900) -> Page:
    page = new_page(color_scheme=color_scheme, width=width, height=height)
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto(PAGE)
    expect(page.get_by_role("heading", name="Vision")).to_be_visible()
    return page


def _red_square(tmp_path) -> str:
    picture = Image.new("RGB", SIZE, (235, 235, 225))
    ImageDraw.Draw(picture).rectangle(SQUARE, fill=(220, 40, 40))
    path = tmp_path / "red-square.png"
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return str(path)


def _locate(page: Page, picture: str | None, target: str, mode: str = "Box") -> None:
    if picture:
        page.get_by_label("Upload one").set_input_files(picture)
    page.get_by_label("Find").fill(target)
    page.get_by_label(mode, exact=True).check()
    page.get_by_role("button", name="Locate").click()


def _expected(image_box: dict, left: float, top: float, right: float, bottom: float) -> dict:
    """Where a region of the picture (in its pixels) is on the screen."""
    sx, sy = image_box["width"] / SIZE[0], image_box["height"] / SIZE[1]
    return {
        "x": image_box["x"] + left * sx,
        "y": image_box["y"] + top * sy,
        "width": (right - left) * sx,
        "height": (bottom - top) * sy,
    }


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_box_is_drawn_over_the_red_square(alice, new_page, upstream_fleet, tmp_path, scheme):
    page = _open(new_page, color_scheme=scheme)
    _locate(page, _red_square(tmp_path), "red square")
    box = page.locator("#vis-box")
    expect(box).to_be_visible(timeout=20_000)
    page.wait_for_function("() => document.getElementById('vis-image').naturalWidth > 0")
    image = page.locator("#vis-image").bounding_box()
    drawn = box.bounding_box()
    square = _expected(image, SQUARE[0], SQUARE[1], SQUARE[2] + 1, SQUARE[3] + 1)
    # The simulator finds the square on a thumbnail, so a pixel or two of the original;
    # the stroke straddles the edge.
    tolerance = 0.03 * image["width"]
    for name in ("x", "y", "width", "height"):
        assert drawn[name] == pytest.approx(square[name], abs=tolerance), name
    expect(page.locator("#vis-json")).to_contain_text('"found": true')
    expect(page.locator(".vis-answer .media-cost")).to_contain_text("$")
    screenshot(page, f"vision-box-{scheme}")
    assert page.errors == []


def test_grid_cells_cover_the_square(alice, new_page, upstream_fleet, tmp_path):
    page = _open(new_page)
    _locate(page, _red_square(tmp_path), "red square", mode="Grid cells")
    cells = page.locator(".vis-cell")
    expect(cells.first).to_be_visible(timeout=20_000)
    image = page.locator("#vis-image").bounding_box()
    square = _expected(image, SQUARE[0], SQUARE[1], SQUARE[2] + 1, SQUARE[3] + 1)
    drawn = [cells.nth(i).bounding_box() for i in range(cells.count())]
    # Each cell drawn holds part of the square, and together they hold all of it.
    for cell in drawn:
        assert cell["x"] < square["x"] + square["width"] and square["x"] < cell["x"] + cell["width"]
        assert (
            cell["y"] < square["y"] + square["height"] and square["y"] < cell["y"] + cell["height"]
        )
    slack = 2
    assert min(c["x"] for c in drawn) <= square["x"] + slack
    assert min(c["y"] for c in drawn) <= square["y"] + slack
    assert max(c["x"] + c["width"] for c in drawn) >= square["x"] + square["width"] - slack
    assert max(c["y"] + c["height"] for c in drawn) >= square["y"] + square["height"] - slack
    screenshot(page, "vision-grid-light")
    assert page.errors == []


def test_a_generated_image_is_picked_and_bad_input_is_explained(alice, new_page, upstream_fleet):
    page = new_page(width=1440, height=900)
    sign_in(page, "alice@example.com", PASSWORD)
    page.goto("/w/acme/playground/images/")
    page.get_by_label("Prompt", exact=True).fill("A yellow sun over the sea")
    page.get_by_label("Count", exact=True).fill("1")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator(".media-tile img")).to_have_count(1, timeout=30_000)

    page.locator(".pg-products").get_by_role("link", name="Vision").click()
    expect(page.get_by_role("heading", name="Vision")).to_be_visible()
    page.get_by_role("button", name="Locate").click()
    expect(page.locator("#vis-image-error")).to_have_text("Upload an image or pick one of yours.")
    expect(page.locator("#vis-target-error")).to_have_text("Say what to find in the image.")

    page.get_by_alt_text("Your generated image 1").click()
    _locate(page, None, "the sun")
    expect(page.locator("#vis-box")).to_be_visible(timeout=20_000)
    page.wait_for_function("() => document.getElementById('vis-image').naturalWidth === 1024")
    page.locator(".vis-answer").get_by_role("button", name="Code").click()
    expect(page.locator("#vis-code-pop #code-curl")).to_contain_text("/v1/vision/locate")
    page.locator("#vis-code-pop").get_by_role("button", name="Close").click()
    screenshot(page, "vision-picked-light")
    assert page.errors == []


def test_the_page_fits_a_phone(alice, new_page, upstream_fleet, tmp_path):
    page = _open(new_page, width=375, height=812)
    _locate(page, _red_square(tmp_path), "red square")
    expect(page.locator("#vis-box")).to_be_visible(timeout=20_000)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    screenshot(page, "vision-phone")
    assert page.errors == []
