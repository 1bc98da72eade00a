"""Images through the console: the OpenAI SDK and curl-shaped calls, each image kept by the
console and handed out as its own signed link, charged per image at its quality and size,
and nothing charged for a call that is refused."""

import base64
import io

import httpx
import openai
import pytest
from PIL import Image, ImageDraw

from console import ledger
from console.actions import create_key
from console.models import Hold, LedgerEntry, UsageRecord
from console.pricing import unit_cost
from gateway import images, pipeline
from gateway.asgi import new_request_id
from gateway.models import StoredFile
from tests.conftest import settle_books
from tests.gateway.conftest import charged


def _openai(console_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=console_url, api_key=key, max_retries=0)


def _post(console_url: str, key: str, path: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{console_url}{path}", json=body, headers={"x-api-key": key} | headers, timeout=60
    )


def png_data_uri(size=(64, 48), colour=(40, 80, 220)) -> str:
    picture = Image.new("RGB", size, "white")
    ImageDraw.Draw(picture).rectangle((8, 8, size[0] // 2, size[1] // 2), fill=colour)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def picture(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def price(images: int, quality: str, size: str = "1024x1024") -> int:
    return unit_cost("images", "", "image", images, f"{quality}/{size}")


def test_the_openai_sdk_generates_an_image_whose_link_works_without_a_key(
    console_url, api_key, acme
):
    start = ledger.balance_of(acme)
    raw = _openai(console_url, api_key).images.with_raw_response.generate(
        prompt="A lighthouse at dusk", size="1536x1024", quality="high", response_format="url"
    )
    result = raw.parse()
    [item] = result.data
    assert item.url.startswith(console_url.removesuffix("/v1") + "/v1/files/file_")
    assert "lighthouse" in item.revised_prompt
    fetched = httpx.get(item.url, timeout=30)  # no key: the link is signed
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert picture(fetched.content).size == (1536, 1024)

    record = charged(raw.headers["x-request-id"])
    assert record.product == "images" and record.status == 200
    assert record.units == {"image": 1}
    assert record.endpoint == "/v1/images/generations"
    assert record.cost == price(1, "high", "1536x1024") == 120_000
    assert ledger.balance_of(acme) == start - 120_000
    assert not Hold.objects.exists()


def test_the_openai_sdk_gets_base64_images_with_their_file_ids(console_url, api_key):
    raw = _openai(console_url, api_key).images.with_raw_response.generate(
        prompt="Two cats on a roof", n=2, quality="medium", response_format="b64_json"
    )
    items = raw.parse().data
    assert len(items) == 2 and all(item.url is None for item in items)
    first, second = (picture(base64.b64decode(item.b64_json)) for item in items)
    assert first.size == second.size == (1024, 1024)
    assert first.tobytes() != second.tobytes()
    file_ids = {item.model_extra["file_id"] for item in items}
    kept = StoredFile.objects.filter(pk__in=file_ids)
    assert kept.count() == 2 and {f.purpose for f in kept} == {"image"}
    assert {f.request_id for f in kept} == {raw.headers["x-request-id"]}

    record = charged(raw.headers["x-request-id"])
    assert record.units == {"image": 2}
    assert record.cost == price(2, "medium") == 80_000


def test_images_generate_answers_a_curl_shaped_call_at_the_low_quality_price(console_url, api_key):
    response = _post(
        console_url, api_key, "/images/generate",
        {"prompt": "A red bicycle", "size": "1024x1536", "quality": "low", "n": 3},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 3 and all(item["file_id"].startswith("file_") for item in data)
    assert picture(httpx.get(data[0]["url"], timeout=30).content).size == (1024, 1536)
    record = charged(response.headers["x-request-id"])
    assert record.product == "images" and record.endpoint == "/v1/images/generate"
    assert record.cost == price(3, "low", "1024x1536") == 45_000


def test_the_image_shortcut_makes_one_square_image_at_the_auto_price(console_url, api_key):
    response = _post(console_url, api_key, "/image", {"prompt": "A futuristic cyberpunk city"})
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    assert picture(httpx.get(item["url"], timeout=30).content).size == (1024, 1024)
    record = charged(response.headers["x-request-id"])
    assert record.endpoint == "/v1/image" and record.units == {"image": 1}
    assert record.cost == price(1, "auto") == 40_000


def test_size_auto_is_the_square_size(console_url, api_key):
    response = _post(
        console_url, api_key, "/images/generate",
        {"prompt": "A pear", "size": "auto", "response_format": "b64_json"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    assert picture(base64.b64decode(item["b64_json"])).size == (1024, 1024)


def test_an_edit_takes_the_image_and_a_reference(console_url, api_key):
    response = _post(
        console_url, api_key, "/images/edit",
        {"prompt": "Make it night", "image": png_data_uri(), "size": "1536x1024",
         "quality": "low", "reference_images": [png_data_uri(colour=(220, 40, 40))]},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    assert item["revised_prompt"].startswith("Make it night")
    assert picture(httpx.get(item["url"], timeout=30).content).size == (1536, 1024)
    record = charged(response.headers["x-request-id"])
    assert record.endpoint == "/v1/images/edit"
    assert record.cost == price(1, "low", "1536x1024") == 15_000


def test_an_upload_can_be_used_by_its_id_or_its_link(console_url, api_key):
    uploaded = _post(
        console_url, api_key, "/upload",
        {"data": png_data_uri().partition(",")[2], "mime_type": "image/png"},
    )  # fmt: skip
    assert uploaded.status_code == 201, uploaded.text
    file = uploaded.json()
    assert charged(uploaded.headers["x-request-id"]).cost == 0

    by_id = _post(
        console_url, api_key, "/images/generate",
        {"prompt": "In the style of the reference", "reference_images": [file["id"]]},
    )  # fmt: skip
    assert by_id.status_code == 200, by_id.text
    edited = _post(
        console_url, api_key, "/images/edit", {"prompt": "Brighter", "image": file["url"]}
    )
    assert edited.status_code == 200, edited.text
    assert charged(by_id.headers["x-request-id"]).cost == price(1, "auto")
    assert charged(edited.headers["x-request-id"]).cost == price(1, "auto")


def test_a_key_without_the_images_scope_gets_403_and_nothing_is_sent(
    console_url, alice, acme, simulator
):
    _key, secret = create_key(workspace=acme, name="chat only", created_by=alice, scopes=["chat"])
    before = simulator.stats()["requests"]
    with pytest.raises(openai.PermissionDeniedError) as caught:
        _openai(console_url, secret).images.generate(prompt="A cat")
    assert "not allowed to use images" in caught.value.message
    response = _post(console_url, secret, "/image", {"prompt": "A cat"})
    assert response.status_code == 403
    assert simulator.stats()["requests"] == before
    settle_books()
    assert not UsageRecord.objects.exists()


def test_another_workspace_gets_404_for_a_file_link_or_an_upload_id(
    console_url, api_key, charlie, globex
):
    uploaded = _post(
        console_url, api_key, "/upload",
        {"data": png_data_uri().partition(",")[2], "mime_type": "image/png"},
    ).json()  # fmt: skip
    _key, stranger = create_key(workspace=globex, name="globex", created_by=charlie)
    unsigned = uploaded["url"].partition("?")[0]
    assert httpx.get(unsigned, headers={"x-api-key": stranger}, timeout=30).status_code == 404
    for reference in (uploaded["id"], unsigned, uploaded["url"]):
        response = _post(
            console_url, stranger, "/images/generate",
            {"prompt": "Copy this", "reference_images": [reference]},
        )  # fmt: skip
        assert response.status_code == 404, reference
        assert "reference_images[0]" in response.json()["detail"]
    settle_books()
    assert not UsageRecord.objects.filter(workspace=globex).exists()
    assert not LedgerEntry.objects.filter(workspace=globex).exists()


def test_an_external_url_as_a_reference_is_400_and_nothing_is_booked(
    console_url, api_key, acme, simulator
):
    start = ledger.balance_of(acme)
    before = simulator.stats()["requests"]
    response = _post(
        console_url, api_key, "/images/generate",
        {"prompt": "A cat", "reference_images": [png_data_uri(), "https://example.com/cat.png"]},
    )  # fmt: skip
    assert response.status_code == 400
    assert "reference_images[1]" in response.json()["detail"]
    assert "other URLs are not fetched" in response.json()["detail"]
    assert simulator.stats()["requests"] == before
    settle_books()
    assert not UsageRecord.objects.exists()
    assert not LedgerEntry.objects.filter(request_id=response.headers["x-request-id"]).exists()
    assert ledger.balance_of(acme) == start


def test_a_prompt_the_upstream_refuses_costs_nothing(console_url, api_key, acme):
    start = ledger.balance_of(acme)
    response = _post(
        console_url, api_key, "/images/generate", {"prompt": "Something forbidden", "n": 4},
        **{"x-sim-status": "400", "x-sim-detail": "The prompt was refused by moderation."},
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["detail"] == "The prompt was refused by moderation."
    record = charged(response.headers["x-request-id"])
    assert record.status == 400 and record.cost == 0 and record.units == {}
    assert ledger.balance_of(acme) == start
    assert not Hold.objects.exists()
    assert not StoredFile.objects.exists()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "'prompt' field is required"),
        ({"prompt": ""}, "'prompt'"),
        ({"prompt": "x" * 32_001}, "'prompt'"),
        ({"prompt": "A cat", "size": "512x512"}, "'size'"),
        ({"prompt": "A cat", "quality": "ultra"}, "'quality'"),
        ({"prompt": "A cat", "n": 5}, "'n'"),
        ({"prompt": "A cat", "n": "2"}, "'n'"),
        ({"prompt": "A cat", "response_format": "png"}, "'response_format'"),
        ({"prompt": "A cat", "reference_images": ["data:,x"] * 5}, "'reference_images'"),
        ({"prompt": "A cat", "reference_images": ["data:image/png;base64,AAAA"]}, "reference_images[0]"),
    ],
)  # fmt: skip
def test_a_bad_field_is_a_400_that_names_it(console_url, api_key, body, named):
    response = _post(console_url, api_key, "/images/generate", body)
    assert response.status_code == 400
    assert named in response.json()["detail"]


def test_an_edit_without_an_image_names_the_field(console_url, api_key):
    response = _post(console_url, api_key, "/images/edit", {"prompt": "Make it night"})
    assert response.status_code == 400
    assert response.json()["detail"] == "The 'image' field is required."


@pytest.mark.django_db(transaction=True)
async def test_a_member_generates_through_the_function_the_playground_calls(
    alice, acme, upstream_fleet
):
    caller = pipeline.as_member(workspace_id=acme.pk, user_id=alice.pk)
    answer, call = await images.generate(
        caller, {"prompt": "A quiet harbour", "quality": "high"}, request_id=new_request_id()
    )
    assert await call.charged() == price(1, "high") == 80_000
    [item] = answer["data"]
    # Without a request there is no host to name: the link is the console's own path.
    assert item["url"].startswith(f"/v1/files/{item['file_id']}/content?expires=")
    record = await UsageRecord.objects.aget(request_id=call.request_id)
    assert record.source == "playground" and record.user_id == alice.pk
    assert record.api_key_id is None and record.product == "images"


def test_a_decompression_bomb_as_a_reference_is_refused_and_nothing_is_booked(
    console_url, api_key, simulator
):
    # A small PNG that decodes to 400 megapixels.
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(bomb.getvalue()).decode()
    before = simulator.stats()["requests"]
    for path, body in [
        ("/images/generate", {"prompt": "A cat", "reference_images": [uri]}),
        ("/vision/locate", {"image": uri, "target": "a cat"}),
    ]:
        response = _post(console_url, api_key, path, body)
        assert response.status_code == 400, path
        assert "too many pixels" in response.json()["detail"]
    assert simulator.stats()["requests"] == before
    settle_books()
    assert not UsageRecord.objects.exists()


def test_image_and_vision_calls_show_in_usage_under_their_products(
    console_url, api_key, alice_client
):
    client = _openai(console_url, api_key)
    client.images.generate(prompt="A red kite", size="1024x1024", quality="low")
    response = _post(
        console_url, api_key, "/vision/locate", {"image": png_data_uri(), "target": "blue box"}
    )
    assert response.status_code == 200
    settle_books()
    page = alice_client.get("/w/acme/usage/?group=product")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Images" in text and "Vision" in text
    assert "/v1/images/generations" in text and "/v1/vision/locate" in text
