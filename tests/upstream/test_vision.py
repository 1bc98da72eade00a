"""Vision locate: normalised boxes and grid cells, deterministic."""

import base64
import io

from PIL import Image, ImageDraw

from upstream import client


def picture_with_red_square() -> str:
    image = Image.new("RGB", (200, 100), "white")
    ImageDraw.Draw(image).rectangle((100, 50, 149, 99), fill=(220, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_it_finds_the_named_colour_where_it_is(upstream_fleet):
    body = {"image": picture_with_red_square(), "target": "the red square"}
    result = (await client.vision_locate(upstream_fleet, body)).json()
    assert result["found"] is True
    box = result["bbox"]
    assert abs(box["x"] - 0.5) < 0.02 and abs(box["y"] - 0.5) < 0.03
    assert abs(box["width"] - 0.25) < 0.02 and abs(box["height"] - 0.5) < 0.03
    assert 0 < result["confidence"] <= 1


async def test_it_says_not_found_for_a_colour_that_is_absent(upstream_fleet):
    body = {"image": picture_with_red_square(), "target": "a blue ball"}
    result = (await client.vision_locate(upstream_fleet, body)).json()
    assert result["found"] is False
    assert result["bbox"] is None


async def test_grid_mode_returns_the_cells_of_the_box(upstream_fleet):
    body = {
        "image": picture_with_red_square(),
        "target": "red",
        "mode": "grid",
        "grid": {"rows": 2, "cols": 4},
    }
    result = (await client.vision_locate(upstream_fleet, body)).json()
    assert result["cells"] == [[1, 2]]


async def test_other_targets_get_a_deterministic_box_inside_the_image(upstream_fleet):
    body = {"image": picture_with_red_square(), "query": "the dog"}
    first = (await client.vision_locate(upstream_fleet, body)).json()
    second = (await client.vision_locate(upstream_fleet, body)).json()
    box = first["bbox"]
    assert first == second
    assert 0 <= box["x"] and box["x"] + box["width"] <= 1
    assert 0 <= box["y"] and box["y"] + box["height"] <= 1
