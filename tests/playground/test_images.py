"""The Images page against the real simulator: runs are generated as the member, kept with their
exact request, reopen into the form and show as code; references are the member's own; other
members and other workspaces see nothing."""

import html
import io
import re

import pytest
from PIL import Image

from accounts.roles import Role as MemberRole
from console.models import UsageRecord
from playground.models import ImageRun
from tests.conftest import settle_books, signed_in

# The gateway keeps files and books calls from threads of its own, which must see the test's data.
pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/w/acme/playground/images/"
GENERATE = PAGE + "generate/"
REFERENCE = PAGE + "reference/"
CODE = PAGE + "code/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def generate(client, **fields):
    data = {"prompt": "A red kite over green hills", "size": "1024x1024", "quality": "low"}
    return client.post(GENERATE, data | {"n": 2} | fields, **HTMX)


def links(page: str) -> list[str]:
    """The stored files' links the page shows as pictures, in order, once each."""
    found = re.findall(r'<img src="(/v1/files/file_[0-9a-f]+/content\?[^"]+)"', page)
    return list(dict.fromkeys(html.unescape(link) for link in found))


def fetch(link: str) -> bytes:
    """What a signed link gives: the /v1 API is served beside Django's URLs, so the link is
    checked and read as the gateway does."""
    from asgiref.sync import async_to_sync

    from gateway import media

    match = re.match(r"/v1/files/(file_[0-9a-f]+)/content\?expires=(\d+)&signature=(.+)$", link)
    file = async_to_sync(media.signed_file)(*match.groups())
    return async_to_sync(media.read)(file)


def references(page: str) -> list[str]:
    return re.findall(r'name="reference" value="([^"]+)"', page)


def png(width: int = 40, height: int = 30, colour=(30, 140, 90)) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    buffer.seek(0)
    buffer.name = "sketch.png"
    return buffer


@pytest.fixture
def run(alice_client, upstream_fleet) -> ImageRun:
    """Alice's run of two images."""
    assert generate(alice_client).status_code == 200
    return ImageRun.objects.get()


def test_the_page_links_every_product_of_the_playground(alice_client, upstream_fleet):
    page = alice_client.get(PAGE).content.decode()
    tabs = re.search(r'<nav class="pg-products".*?</nav>', page, re.S).group(0)
    assert re.findall(r'<a href="([^"]+)"', tabs) == [
        "/w/acme/playground/",
        "/w/acme/playground/responses/",
        "/w/acme/playground/embeddings/",
        "/w/acme/playground/fetch/",
        "/w/acme/playground/images/",
        "/w/acme/playground/vision/",
        "/w/acme/playground/voice/",
        "/w/acme/playground/realtime/",
        "/w/acme/playground/music/",
        "/w/acme/playground/video/",
    ]
    assert re.search(r'aria-current="page"[^<]*<svg[^>]*>.*?</svg> Images', tabs, re.S)
    sidebar = re.search(r'<nav class="nav">.*?</nav>', page, re.S).group(0)
    assert re.search(r'href="/w/acme/playground/" aria-current="page"', sidebar)
    assert 'name="prompt"' in page and 'name="upload"' in page
    assert "Make an image" in page


def test_the_chat_page_shows_the_same_tabs(alice_client, upstream_fleet):
    page = alice_client.get("/w/acme/playground/").content.decode()
    assert 'href="/w/acme/playground/images/"' in page
    assert 'href="/w/acme/playground/vision/"' in page


def test_a_viewer_may_not_generate_images(member_of_acme, upstream_fleet):
    viewer = signed_in(member_of_acme(MemberRole.VIEWER))
    assert viewer.get(PAGE).status_code == 403
    assert generate(viewer).status_code == 403
    assert not ImageRun.objects.exists()


def test_a_stranger_cannot_even_see_the_page(charlie_client, upstream_fleet):
    assert charlie_client.get(PAGE).status_code == 404
    assert generate(charlie_client).status_code == 404


def test_it_generates_images_as_the_member_and_keeps_the_run(alice, alice_client, upstream_fleet):
    response = generate(alice_client)
    assert response.status_code == 200
    page = response.content.decode()
    run = ImageRun.objects.get()
    assert run.user == alice and run.workspace.slug == "acme"
    assert run.request == {
        "prompt": "A red kite over green hills",
        "size": "1024x1024",
        "quality": "low",
        "n": 2,
        "response_format": "url",
        "reference_images": [],
    }
    assert len(run.file_ids) == 2 and all(i.startswith("file_") for i in run.file_ids)
    assert "(simulated illustration)" in run.results[0]["revised_prompt"]
    shown = links(page)
    assert len(shown) == 2
    for link, file_id in zip(shown, run.file_ids, strict=True):
        assert file_id in link
        assert Image.open(io.BytesIO(fetch(link))).size == (1024, 1024)
    settle_books()
    record = UsageRecord.objects.get(request_id=run.request_id)
    assert record.source == "playground" and record.user_id == alice.pk
    assert record.product == "images"
    assert run.cost == record.cost > 0
    assert run.duration_ms > 0
    # The history is swapped in beside the run, with this run on top.
    assert re.search(r'<nav id="img-history" [^>]*hx-swap-oob="true"', page)
    assert f'href="/w/acme/playground/images/?run={run.pk}" aria-current="page"' in page


def test_a_wide_picture_comes_back_wide(alice_client, upstream_fleet):
    page = generate(alice_client, size="1536x1024", n=1).content.decode()
    (link,) = links(page)
    picture = Image.open(io.BytesIO(fetch(link)))
    assert picture.size == (1536, 1024)


@pytest.mark.parametrize(
    ("fields", "error_id", "message"),
    [
        ({"prompt": "  "}, "img-prompt-error", "Describe the image to make."),
        ({"n": 5}, "img-n-error", "Make between 1 and 4 images."),
        ({"n": 0}, "img-n-error", "Make between 1 and 4 images."),
        ({"n": "two"}, "img-n-error", "Make between 1 and 4 images."),
    ],
)
def test_bad_input_gets_a_message_beside_the_field(
    alice_client, upstream_fleet, fields, error_id, message
):
    response = generate(alice_client, **fields)
    assert response.status_code == 400
    page = response.content.decode()
    assert f'<ul class="errorlist" id="{error_id}"><li>{message}</li></ul>' in page
    assert response["HX-Retarget"] == "#img-form" and response["HX-Reswap"] == "outerHTML"
    assert not ImageRun.objects.exists()


def test_a_size_or_quality_not_offered_is_refused(alice_client, upstream_fleet):
    page = generate(alice_client, size="4096x4096", quality="ultra").content.decode()
    assert page.count("Select a valid choice.") == 2
    assert not ImageRun.objects.exists()


def test_an_upstream_failure_is_shown_beside_the_form(alice_client, start_simulator, make_fleet):
    from upstream.fleet import set_fleet

    fleet = make_fleet(start_simulator(fail_status=503), names=["failing"])
    previous = set_fleet(fleet)
    try:
        response = generate(alice_client)
    finally:
        set_fleet(previous)
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#img-form"
    page = response.content.decode()
    assert 'id="img-form-error"' in page and "(503)" in page
    assert 'value="A red kite over green hills"' not in page  # a textarea, not an input
    assert "A red kite over green hills</textarea>" in page
    assert not ImageRun.objects.exists()


def test_an_uploaded_reference_is_sent_as_a_file_id(alice_client, upstream_fleet):
    chip = alice_client.post(REFERENCE, {"upload": png()}, **HTMX)
    assert chip.status_code == 200
    (token,) = references(chip.content.decode())
    assert links(chip.content.decode())
    assert generate(alice_client, reference=[token], n=1).status_code == 200
    (file_id,) = ImageRun.objects.get().request["reference_images"]
    assert file_id.startswith("file_") and file_id in chip.content.decode()


def test_a_picture_of_a_run_becomes_a_reference_for_the_next(alice_client, run):
    chip = alice_client.post(REFERENCE, {"run": run.pk, "index": 1}, **HTMX).content.decode()
    (token,) = references(chip)
    assert run.file_ids[1] in chip
    response = generate(alice_client, prompt="The same kite at night", reference=[token])
    assert response.status_code == 200
    latest = ImageRun.objects.first()
    assert latest.request["reference_images"] == [run.file_ids[1]]


def test_more_than_four_references_are_refused(alice_client, run):
    tokens = [
        references(alice_client.post(REFERENCE, {"upload": png(colour=(i, 0, 0))}, **HTMX).content.decode())[0]
        for i in range(4)
    ]  # fmt: skip
    fifth = alice_client.post(REFERENCE, {"run": run.pk, "index": 0, "reference": tokens}, **HTMX)
    page = fifth.content.decode()
    assert not references(page)
    assert "Use at most 4 reference images: remove one first." in page
    response = generate(
        alice_client, reference=tokens + tokens[:1]
    )  # the same one twice counts once
    assert response.status_code == 200


def test_a_reference_that_is_not_the_members_is_refused(alice_client, bob_client, run):
    bobs = references(bob_client.post(REFERENCE, {"upload": png()}, **HTMX).content.decode())
    for forged in (bobs[0], run.file_ids[0], "file_" + "0" * 24):
        response = generate(alice_client, reference=[forged])
        assert response.status_code == 400
        assert "A reference image is not one of yours" in response.content.decode()
    assert ImageRun.objects.count() == 1


def test_a_file_that_is_not_a_picture_is_refused_as_a_reference(alice_client, upstream_fleet):
    text = io.BytesIO(b"just some words")
    text.name = "notes.png"
    page = alice_client.post(REFERENCE, {"upload": text}, **HTMX).content.decode()
    assert not references(page)
    assert 'id="img-ref-error" role="alert" hx-swap-oob="true">notes.png:' in page


def test_a_run_reopens_into_the_form(alice_client, run):
    chip = alice_client.post(REFERENCE, {"run": run.pk, "index": 0}, **HTMX).content.decode()
    generate(alice_client, prompt="A kite, again", size="1024x1536", quality="high", n=1,
             reference=references(chip))  # fmt: skip
    second = ImageRun.objects.first()
    page = alice_client.get(f"{PAGE}?run={second.pk}").content.decode()
    assert ">\nA kite, again</textarea>" in page or ">A kite, again</textarea>" in page
    assert '<option value="1024x1536" selected>' in page
    assert '<option value="high" selected>' in page
    assert 'name="n" value="1"' in page
    assert len(references(page)) == 1 and run.file_ids[0] in page
    assert len(links(page)) == 2  # the reference, and the run's one picture
    assert f'href="/w/acme/playground/images/?run={second.pk}" aria-current="page"' in page


def test_another_members_runs_are_not_found(bob_client, charlie_client, run):
    for client in (bob_client,):
        assert client.get(f"{PAGE}?run={run.pk}").status_code == 404
        assert client.get(f"{CODE}?run={run.pk}").status_code == 404
        response = client.post(REFERENCE, {"run": run.pk, "index": 0}, **HTMX)
        assert response.status_code == 404
    assert charlie_client.get(f"{PAGE}?run={run.pk}").status_code == 404
    assert run.file_ids[0] not in bob_client.get(PAGE).content.decode()
    assert bob_client.get(f"{PAGE}?run=abc").status_code == 404


def test_the_history_lists_only_the_members_own_runs(alice_client, bob_client, run):
    generate(bob_client, prompt="Bob's boat")
    alices = alice_client.get(PAGE).content.decode()
    assert "Bob&#x27;s boat" not in alices and "A red kite over green hills" in alices
    bobs = bob_client.get(PAGE).content.decode()
    assert "Bob&#x27;s boat" in bobs and "A red kite" not in bobs


def test_a_run_shows_as_code_from_its_exact_request(alice_client, run):
    page = alice_client.get(f"{CODE}?run={run.pk}").content.decode()
    page = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "curl http://testserver/v1/images/generations" in page
    assert '"prompt": "A red kite over green hills"' in page
    assert "client.images.generate(" in page and "extra_body={" in page
    assert "process.env.MIRA_API_KEY" in page


def test_the_form_shows_as_code_before_it_is_sent(alice_client, run):
    chip = alice_client.post(REFERENCE, {"run": run.pk, "index": 0}, **HTMX).content.decode()
    data = {"prompt": "Draft", "size": "1536x1024", "quality": "medium", "n": 3}
    page = alice_client.post(CODE, data | {"reference": references(chip)}, **HTMX)
    text = html.unescape(re.sub(r"<[^>]+>", "", page.content.decode()))
    assert '"size": "1536x1024"' in text and '"n": 3' in text
    assert f'"reference_images": ["{run.file_ids[0]}"]' in text
    bad = alice_client.post(CODE, data | {"n": 9}, **HTMX).content.decode()
    assert "Fill in the form first: Make between 1 and 4 images." in bad


def test_the_images_are_the_workspaces_files(alice_client, run):
    """The console keeps what came back: the links stay good when the upstream's do not."""
    from gateway.models import StoredFile

    files = StoredFile.objects.filter(pk__in=run.file_ids)
    assert len(files) == 2
    assert {(f.workspace.slug, f.content_type) for f in files} == {("acme", "image/png")}
    assert all(f.size > 1000 for f in files)


def test_a_picture_over_the_upload_limit_is_refused_before_it_is_read(
    alice_client, upstream_fleet, settings
):
    settings.MEDIA_MAX_UPLOAD_BYTES = 100
    page = alice_client.post(REFERENCE, {"upload": png(200, 200)}, **HTMX).content.decode()
    assert not references(page)
    assert "sketch.png: too large, the limit is" in page


def test_a_member_deletes_a_run_of_their_own_only(alice_client, bob_client, run):
    delete = f"{PAGE}runs/{run.pk}/delete/"
    assert bob_client.post(delete, **HTMX).status_code == 404
    assert ImageRun.objects.filter(pk=run.pk).exists()
    response = alice_client.post(delete, **HTMX)
    assert response.status_code == 200
    assert "No image runs yet." in response.content.decode()
    assert not ImageRun.objects.exists()


def test_deleting_the_run_on_the_page_opens_a_new_form(alice_client, run):
    response = alice_client.post(f"{PAGE}runs/{run.pk}/delete/", {"open": run.pk}, **HTMX)
    assert response["HX-Redirect"] == PAGE
    assert not ImageRun.objects.exists()
