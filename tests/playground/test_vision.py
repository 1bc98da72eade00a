"""The Vision page against the real simulator: an uploaded or generated image, the box (or grid
cells) drawn where the model put it, with the answer's JSON and its cost; only the member's own
images may be picked."""

import html
import io
import json
import re

import pytest
from PIL import Image, ImageDraw

from accounts.roles import Role as MemberRole
from console.models import UsageRecord
from console.pricing import format_money
from playground.models import ImageRun
from tests.conftest import settle_books, signed_in

# The gateway keeps files and books calls from threads of its own, which must see the test's data.
pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/w/acme/playground/vision/"
LOCATE = PAGE + "locate/"
CODE = PAGE + "code/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def red_square(size=(200, 100), square=(120, 20, 160, 60)) -> io.BytesIO:
    """A white picture with a red square at `square` (left, top, right, bottom; inclusive)."""
    picture = Image.new("RGB", size, "white")
    ImageDraw.Draw(picture).rectangle(square, fill=(220, 40, 40))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    buffer.seek(0)
    buffer.name = "square.png"
    return buffer


def locate(client, **fields):
    return client.post(LOCATE, {"target": "red square", "mode": "bbox"} | fields, **HTMX)


def attribute(page: str, element_id: str, name: str) -> float:
    element = re.search(rf'<[^>]*id="{element_id}"[^>]*>', page).group(0)
    return float(re.search(rf' {name}="([^"]+)"', element).group(1))


def answer_of(page: str) -> dict:
    text = re.search(r'<code id="vis-json">(.*?)</code>', page, re.S).group(1)
    return json.loads(html.unescape(text))


def test_the_page_offers_an_upload_and_the_target(alice_client, upstream_fleet):
    page = alice_client.get(PAGE).content.decode()
    assert 'type="file" name="upload"' in page and 'name="target"' in page
    assert re.search(r'href="/w/acme/playground/vision/" aria-current="page"', page)
    assert "Find something in an image" in page


def test_a_viewer_may_not_use_vision_and_a_stranger_sees_nothing(
    member_of_acme, charlie_client, upstream_fleet
):
    viewer = signed_in(member_of_acme(MemberRole.VIEWER))
    assert viewer.get(PAGE).status_code == 403
    assert locate(viewer, upload=red_square()).status_code == 403
    assert charlie_client.get(PAGE).status_code == 404
    assert locate(charlie_client, upload=red_square()).status_code == 404


def test_the_box_is_drawn_where_the_square_is(alice, alice_client, upstream_fleet):
    response = locate(alice_client, upload=red_square())
    assert response.status_code == 200
    page = response.content.decode()
    answer = answer_of(page)
    assert answer["found"] is True and answer["image"] == {"width": 200, "height": 100}
    # The square covers x 120..160 of 200 and y 20..60 of 100.
    box = {name: attribute(page, "vis-box", name) for name in ("x", "y", "width", "height")}
    assert box == pytest.approx({"x": 0.6, "y": 0.2, "width": 0.205, "height": 0.41}, abs=0.02)
    assert box["x"] == pytest.approx(answer["bbox"]["x"], abs=1e-4)
    assert re.search(r'<img src="/v1/files/file_[0-9a-f]+/content\?[^"]+" alt="The image', page)
    settle_books()
    record = UsageRecord.objects.get(product="vision")
    assert record.source == "playground" and record.user_id == alice.pk
    assert record.cost > 0
    assert f'title="What this call cost">{format_money(record.cost, precise=True)}</span>' in page


def test_grid_mode_draws_the_cells_the_square_covers(alice_client, upstream_fleet):
    page = locate(alice_client, upload=red_square(), mode="grid").content.decode()
    answer = answer_of(page)
    assert answer["grid"] == {"rows": 3, "cols": 3}
    cells = re.findall(r'<rect class="vis-cell" x="([^"]+)" y="([^"]+)"', page)
    assert len(cells) == len(answer["cells"]) > 0
    assert {(round(float(y) * 3), round(float(x) * 3)) for x, y in cells} == {
        (r, c) for r, c in answer["cells"]
    }
    assert page.count('class="vis-grid"') == 4
    assert 'id="vis-box"' not in page


def test_nothing_found_draws_nothing(alice_client, upstream_fleet):
    page = locate(alice_client, upload=red_square(), target="blue circle").content.decode()
    assert answer_of(page)["found"] is False
    assert "Not found" in page and "vis-box" not in page.split('<code id="vis-json">')[0]


def test_a_generated_image_can_be_picked(alice_client, upstream_fleet):
    images = "/w/acme/playground/images/generate/"
    data = {"prompt": "A kite", "size": "1024x1024", "quality": "low", "n": 1}
    assert alice_client.post(images, data, **HTMX).status_code == 200
    (file_id,) = ImageRun.objects.get().file_ids
    page = alice_client.get(PAGE).content.decode()
    (token,) = re.findall(r'name="image" value="([^"]+)"', page)
    response = locate(alice_client, image=token, target="kite")
    assert response.status_code == 200
    result = response.content.decode()
    assert file_id in result and answer_of(result)["image"] == {"width": 1024, "height": 1024}
    assert json.loads(html.unescape(re.search(r'id="vis-request" value="([^"]+)"', result)[1])) == {
        "image": file_id,
        "target": "kite",
        "mode": "bbox",
    }


def test_another_members_images_are_not_offered_nor_taken(alice_client, bob_client, upstream_fleet):
    images = "/w/acme/playground/images/generate/"
    data = {"prompt": "Alice's kite", "size": "1024x1024", "quality": "low", "n": 1}
    alice_client.post(images, data, **HTMX)
    alices = re.findall(r'name="image" value="([^"]+)"', alice_client.get(PAGE).content.decode())
    assert 'name="image"' not in bob_client.get(PAGE).content.decode()
    (file_id,) = ImageRun.objects.get().file_ids
    for forged in (alices[0], file_id):
        response = locate(bob_client, image=forged)
        assert response.status_code == 400
        assert "That image is not one of yours any more; pick another." in response.content.decode()
    assert not UsageRecord.objects.filter(product="vision").exists()


@pytest.mark.parametrize(
    ("fields", "error_id", "message"),
    [
        ({}, "vis-image-error", "Upload an image or pick one of yours."),
        ({"upload": True, "target": " "}, "vis-target-error", "Say what to find in the image."),
    ],
)
def test_bad_input_gets_a_message_beside_the_field(
    alice_client, upstream_fleet, fields, error_id, message
):
    if fields.pop("upload", False):
        fields["upload"] = red_square()
    response = locate(alice_client, **fields)
    assert response.status_code == 400
    assert response["HX-Retarget"] == "#vis-form"
    page = response.content.decode()
    assert re.search(rf'id="{error_id}"[^>]*>(<li>)?{re.escape(message)}<', page)


def test_a_file_that_is_not_a_picture_is_refused(alice_client, upstream_fleet):
    text = io.BytesIO(b"not a picture at all")
    text.name = "photo.png"
    response = locate(alice_client, upload=text)
    assert response.status_code == 400
    assert re.search(r'id="vis-image-error" role="alert">photo.png: ', response.content.decode())


def test_the_request_shows_as_code(alice_client, upstream_fleet):
    page = locate(alice_client, upload=red_square()).content.decode()
    sent = html.unescape(re.search(r'id="vis-request" value="([^"]+)"', page)[1])
    code = alice_client.post(CODE, {"request": sent}, **HTMX).content.decode()
    text = html.unescape(re.sub(r"<[^>]+>", "", code))
    assert "curl http://testserver/v1/vision/locate" in text
    assert '"target": "red square"' in text and "client.post(" in text
    bad = alice_client.post(CODE, {"request": "nonsense"}, **HTMX).content.decode()
    assert "The page sent no request." in bad


def test_an_image_from_the_images_page_comes_picked(alice_client, bob_client, upstream_fleet):
    images = "/w/acme/playground/images/generate/"
    data = {"prompt": "A kite", "size": "1024x1024", "quality": "low", "n": 1}
    made = alice_client.post(images, data, **HTMX).content.decode()
    link = html.unescape(re.search(r'href="(/w/acme/playground/vision/\?image=[^"]+)"', made)[1])
    page = alice_client.get(link).content.decode()
    assert re.search(r'name="image" value="[^"]+" class="sr-only" checked>', page)
    assert bob_client.get(link).status_code == 404
    assert alice_client.get(PAGE + "?image=forged").status_code == 404


def test_an_upstream_failure_is_shown_beside_the_form(alice_client, start_simulator, make_fleet):
    from upstream.fleet import set_fleet

    previous = set_fleet(make_fleet(start_simulator(fail_status=503), names=["failing"]))
    try:
        response = locate(alice_client, upload=red_square())
    finally:
        set_fleet(previous)
    assert response.status_code == 200 and response["HX-Retarget"] == "#vis-form"
    page = response.content.decode()
    assert re.search(r'id="vis-form-error">.*The upstream is unavailable \(503\)', page, re.S)
    assert 'value="red square"' in page
