"""Vision through the console: a described target located in an image as a normalised box
or grid cells, charged the vision price of one image."""

import base64
import io

import httpx
import pytest
from PIL import Image, ImageDraw

from console import ledger
from console.actions import create_key
from console.models import LedgerEntry, UsageRecord
from console.pricing import unit_cost
from tests.conftest import settle_books
from tests.gateway.conftest import charged

VISION_PRICE = 2_000


def red_square_on_white() -> str:
    """A 200x100 picture, white with a red square from (100, 20) to (140, 60): the box is
    x 0.5, y 0.2, width 0.2, height 0.4."""
    picture = Image.new("RGB", (200, 100), "white")
    ImageDraw.Draw(picture).rectangle((100, 20, 139, 59), fill=(220, 40, 40))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _locate(console_url: str, key: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{console_url}/vision/locate", json=body, headers={"x-api-key": key}, timeout=60
    )


def test_it_finds_the_red_square_where_it_was_drawn(console_url, api_key, acme):
    start = ledger.balance_of(acme)
    response = _locate(
        console_url, api_key, {"image": red_square_on_white(), "target": "red square"}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["found"] is True
    assert answer["bbox"] == pytest.approx({"x": 0.5, "y": 0.2, "width": 0.2, "height": 0.4})
    record = charged(response.headers["x-request-id"])
    assert record.product == "vision" and record.endpoint == "/v1/vision/locate"
    assert record.units == {"image": 1}
    assert record.cost == unit_cost("vision", "", "image", 1) == VISION_PRICE
    assert ledger.balance_of(acme) == start - VISION_PRICE


def test_grid_mode_answers_the_cells_the_target_covers(console_url, api_key):
    response = _locate(
        console_url,
        api_key,
        {"image": red_square_on_white(), "query": "the red square", "mode": "grid",
         "grid": {"rows": 2, "cols": 4}},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["grid"] == {"rows": 2, "cols": 4}
    assert answer["cells"] == [[0, 2], [1, 2]]
    assert charged(response.headers["x-request-id"]).cost == VISION_PRICE


def test_a_target_that_is_not_there_is_not_found(console_url, api_key):
    response = _locate(console_url, api_key, {"image": red_square_on_white(), "target": "blue"})
    assert response.status_code == 200
    assert response.json()["found"] is False
    assert charged(response.headers["x-request-id"]).cost == VISION_PRICE


def test_an_upload_can_be_located_by_its_id_or_its_link(console_url, api_key):
    uploaded = httpx.post(
        f"{console_url}/upload",
        json={"data": red_square_on_white().partition(",")[2], "mime_type": "image/png"},
        headers={"x-api-key": api_key},
        timeout=30,
    ).json()
    for image in (uploaded["id"], uploaded["url"]):
        response = _locate(console_url, api_key, {"image": image, "target": "red square"})
        assert response.status_code == 200, response.text
        assert response.json()["bbox"]["x"] == pytest.approx(0.5)


def test_a_key_without_the_vision_scope_gets_403(console_url, alice, acme, simulator):
    _key, secret = create_key(workspace=acme, name="images", created_by=alice, scopes=["images"])
    before = simulator.stats()["requests"]
    response = _locate(console_url, secret, {"image": red_square_on_white(), "target": "red"})
    assert response.status_code == 403
    assert "not allowed to use vision" in response.json()["detail"]
    assert simulator.stats()["requests"] == before


def test_another_workspace_gets_404_for_an_upload_id_or_link(console_url, api_key, charlie, globex):
    uploaded = httpx.post(
        f"{console_url}/upload",
        json={"data": red_square_on_white().partition(",")[2], "mime_type": "image/png"},
        headers={"x-api-key": api_key},
        timeout=30,
    ).json()
    _key, stranger = create_key(workspace=globex, name="globex", created_by=charlie)
    for image in (uploaded["id"], uploaded["url"].partition("?")[0]):
        response = _locate(console_url, stranger, {"image": image, "target": "red square"})
        assert response.status_code == 404, image
    settle_books()
    assert not UsageRecord.objects.filter(workspace=globex).exists()


def test_an_external_url_is_400_and_nothing_is_booked(console_url, api_key, simulator):
    before = simulator.stats()["requests"]
    response = _locate(
        console_url, api_key, {"image": "https://example.com/street.jpg", "target": "red car"}
    )
    assert response.status_code == 400
    assert "'image'" in response.json()["detail"]
    assert simulator.stats()["requests"] == before
    settle_books()
    assert not UsageRecord.objects.exists()
    assert not LedgerEntry.objects.filter(request_id=response.headers["x-request-id"]).exists()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"target": "red"}, "The 'image' field is required."),
        ({"image": "data:image/png;base64,AAAA"}, "The 'target' field is required."),
        ({"image": "x", "target": "red", "mode": "polygon"}, "Invalid 'mode'"),
        ({"image": "x", "target": "red", "grid": {"rows": 0}}, "Invalid 'grid.rows'"),
    ],
)
def test_a_bad_field_is_a_400_that_names_it(console_url, api_key, body, detail):
    response = _locate(console_url, api_key, body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail)
