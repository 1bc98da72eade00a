"""Images: real PNGs of the requested size, generated and edited."""

import base64
import io

import pytest
from PIL import Image

from upstream import client
from upstream.errors import UpstreamError


def png_from(item: dict) -> Image.Image:
    if "b64_json" in item:
        data = base64.b64decode(item["b64_json"])
    else:
        header, _, payload = item["url"].partition(",")
        assert header == "data:image/png;base64"
        data = base64.b64decode(payload)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


async def test_it_generates_a_png_of_the_requested_size(upstream_fleet):
    body = {"prompt": "a lighthouse at dusk", "size": "320x200"}
    response = await client.images_generate(upstream_fleet, body)
    data = response.json()
    assert data["created"] > 0
    image = png_from(data["data"][0])
    assert image.size == (320, 200)
    assert "lighthouse" in data["data"][0]["revised_prompt"]


async def test_it_returns_b64_json_and_several_images_when_asked(upstream_fleet):
    body = {"prompt": "three cats", "size": "64x64", "n": 2, "response_format": "b64_json"}
    data = (await client.images_generate(upstream_fleet, body)).json()["data"]
    first, second = (png_from(item) for item in data)
    assert first.size == second.size == (64, 64)
    assert first.tobytes() != second.tobytes()


async def test_the_same_prompt_draws_the_same_picture(upstream_fleet):
    body = {"prompt": "a red kite", "size": "96x96"}
    one = (await client.images_generate(upstream_fleet, body)).json()["data"][0]["url"]
    two = (await client.images_generate(upstream_fleet, body)).json()["data"][0]["url"]
    assert one == two


async def test_it_rejects_a_malformed_size(upstream_fleet):
    with pytest.raises(UpstreamError) as caught:
        await client.images_generate(upstream_fleet, {"prompt": "x", "size": "big"})
    assert caught.value.status == 400
    assert "'size'" in caught.value.detail


def source_png(size=(80, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (0, 200, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_it_edits_an_image_given_as_a_data_uri(upstream_fleet):
    uri = "data:image/png;base64," + base64.b64encode(source_png()).decode()
    body = {"prompt": "make it blue", "image": uri}
    edited = png_from((await client.images_edit(upstream_fleet, body)).json()["data"][0])
    assert edited.size == (80, 60)
    assert edited.convert("RGB").getpixel((5, 5)) != (0, 200, 0)


async def test_it_edits_an_uploaded_image_to_a_new_size(upstream_fleet):
    body = {"prompt": "sepia", "size": "40x40"}
    response = await client.images_edit(upstream_fleet, body, image=source_png())
    assert png_from(response.json()["data"][0]).size == (40, 40)
