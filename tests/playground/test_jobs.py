"""The Music and Video pages against the real simulator: every field reaches the job, bad input
is named beside its field and starts nothing, the job is held and booked as the member's,
and only the member sees their jobs (pages, cards, cancelling and the job centre's socket)."""

import re

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from console.models import Hold, UsageRecord
from gateway.models import Job
from tests.conftest import settle_books, signed_in
from tests.playground.conftest import session_headers

pytestmark = pytest.mark.django_db(transaction=True)

MUSIC = "/w/acme/playground/music/"
VIDEO = "/w/acme/playground/video/"
HTMX = {"HTTP_HX_REQUEST": "true"}
LONG = {"HTTP_X_SIM_JOB_SECONDS": "30"}
SONG = {
    "prompt": "A calm piano piece", "genre": "ambient", "mood": "calm", "style": "solo piano",
    "duration_seconds": "3", "lyrics": "Rain on the window",
}  # fmt: skip


def start_music(client, **fields):
    return client.post(MUSIC + "start/", SONG | fields, **HTMX, **LONG)


def test_the_pages_offer_every_field_of_the_api(alice_client, upstream_fleet):
    music = alice_client.get(MUSIC).content.decode()
    for name in ("prompt", "genre", "mood", "style", "duration_seconds", "instrumental", "lyrics"):
        assert f'name="{name}"' in music
    assert re.search(r'href="/w/acme/playground/music/" aria-current="page"', music)
    video = alice_client.get(VIDEO).content.decode()
    for name in ("prompt", "upload", "aspect_ratio", "duration_seconds", "resolution"):
        assert f'name="{name}"' in video
    assert 'data-job-socket="/ws/jobs/acme/"' in video


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": ""}, "Describe the music to make."),
        ({"duration_seconds": "241"}, "Choose a length between 1 and 240 seconds."),
        ({"instrumental": "on"}, "An instrumental piece has no lyrics"),
    ],
)
def test_bad_music_input_is_named_and_starts_nothing(alice_client, upstream_fleet, fields, message):
    response = start_music(alice_client, **fields)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert response.headers["HX-Retarget"] == "#job-form"
    assert not Job.objects.exists() and not Hold.objects.exists()
    settle_books()
    assert not UsageRecord.objects.exists()


def test_bad_video_input_is_named_and_starts_nothing(alice_client, bob, upstream_fleet):
    response = alice_client.post(
        VIDEO + "start/", {"prompt": "x", "aspect_ratio": "4:3", "duration_seconds": "5",
                           "resolution": "720p"}, **HTMX,
    )  # fmt: skip
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    # Another member's picture reference is not one of Alice's.
    response = alice_client.post(
        VIDEO + "start/", {"prompt": "x", "aspect_ratio": "16:9", "duration_seconds": "5",
                           "resolution": "720p", "image": "not-a-reference"}, **HTMX,
    )  # fmt: skip
    assert response.status_code == 400 and "not one of yours" in response.content.decode()
    assert not Job.objects.exists()


def test_a_music_job_starts_as_the_member_with_its_worst_case_held(
    alice, alice_client, upstream_fleet
):
    response = start_music(alice_client)
    assert response.status_code == 200
    page = response.content.decode()
    job = Job.objects.get()
    assert f'id="job-{job.pk}"' in page and "up to $" in page and "data-unfinished" in page
    assert job.user_id == alice.pk and job.source == "playground" and job.kind == "music"
    assert job.params | {"instrumental": False} == job.params
    assert {k: job.params[k] for k in ("genre", "mood", "style", "lyrics")} == {
        "genre": "ambient", "mood": "calm", "style": "solo piano", "lyrics": "Rain on the window",
    }  # fmt: skip
    assert Hold.objects.get(request_id=job.request_id).amount == job.held > 0

    # Other console pages watch it while it runs (and only then).
    usage = alice_client.get("/w/acme/usage/").content.decode()
    assert f'data-watch="{job.pk}"' in usage and "js/jobs.js" in usage
    cancelled = alice_client.post(f"/w/acme/playground/jobs/{job.pk}/cancel/", **HTMX)
    assert "Cancelled" in cancelled.content.decode()
    assert "job-toasts" not in alice_client.get("/w/acme/usage/").content.decode()
    job.refresh_from_db()
    assert job.status == "cancelled" and job.cost == 0
    assert not Hold.objects.filter(request_id=job.request_id).exists()


def test_an_empty_balance_is_shown_beside_the_form(charlie_client, upstream_fleet):
    response = charlie_client.post("/w/globex/playground/music/start/", SONG, **HTMX)
    assert response.status_code == 200
    assert "Not enough credit (402)" in response.content.decode()
    assert not Job.objects.exists()


def test_only_the_member_sees_and_cancels_their_jobs(
    alice_client, bob_client, charlie_client, upstream_fleet
):
    start_music(alice_client)
    job = Job.objects.get()
    for client in (bob_client, charlie_client):
        assert client.get(f"/w/acme/playground/jobs/{job.pk}/").status_code == 404
        assert client.post(f"/w/acme/playground/jobs/{job.pk}/cancel/").status_code == 404
        assert client.get(f"/w/acme/playground/music/code/?job={job.pk}").status_code == 404
    assert job.pk not in bob_client.get(MUSIC).content.decode()
    job.refresh_from_db()
    assert job.settled_at is None
    assert alice_client.get(f"/w/acme/playground/jobs/{job.pk}/").status_code == 200


def test_view_code_shows_the_request_and_its_polling(alice_client, upstream_fleet):
    response = alice_client.post(MUSIC + "code/", SONG, **HTMX).content.decode()
    assert "/audio/music" in response and "solo piano" in response and "MIRA_API_KEY" in response
    start_music(alice_client)
    job = Job.objects.get()
    response = alice_client.get(f"{MUSIC}code/?job={job.pk}").content.decode()
    assert "Rain on the window" in response and "queued" in response


def _socket(headers, slug="acme") -> WebsocketCommunicator:
    from config.asgi import application

    return WebsocketCommunicator(application, f"/ws/jobs/{slug}/", headers=headers)


async def test_the_socket_tells_the_member_of_their_jobs_and_nobody_else(
    alice, bob, upstream_fleet
):
    alice_client = await sync_to_async(signed_in)(alice)
    await sync_to_async(alice_client.post)(
        MUSIC + "start/", SONG | {"duration_seconds": "2"}, **HTMX,
        HTTP_X_SIM_JOB_SECONDS="1",
    )  # fmt: skip
    job = await Job.objects.aget()
    mine = _socket(await sync_to_async(session_headers)(alice))
    assert (await mine.connect())[0]
    theirs = _socket(await sync_to_async(session_headers)(bob))
    assert (await theirs.connect())[0]
    statuses = []
    while not statuses or statuses[-1] != "succeeded":
        message = await mine.receive_json_from(timeout=15)
        assert message["type"] == "job" and message["id"] == job.pk
        statuses.append(message["status"])
    assert message["finished"] and "<audio" in message["html"] and message["kind"] == "music"
    assert message["url"] == f"{MUSIC}?job={job.pk}"
    assert await theirs.receive_nothing(timeout=1.5)
    await mine.disconnect()
    await theirs.disconnect()


@pytest.mark.parametrize("who", ["anonymous", "stranger", "foreign page"])
async def test_the_socket_refuses_who_may_not_see_the_jobs(alice, charlie, who):
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if who == "stranger":
        headers = await sync_to_async(session_headers)(charlie)
    elif who == "foreign page":
        headers = await sync_to_async(session_headers)(alice, b"https://evil.example")
    ws = _socket(headers)
    connected, code = await ws.connect()
    assert not connected
    if who != "foreign page":
        assert code == (4401 if who == "anonymous" else 4403)
    await ws.disconnect()


def test_a_video_starts_from_one_of_the_members_pictures(alice_client, upstream_fleet):
    from tests.playground.test_images import generate

    assert generate(alice_client).status_code == 200
    page = alice_client.get(VIDEO).content.decode()
    picks = re.findall(r'name="image" value="([^"]+)"', page)
    assert picks, "the member's pictures are offered as a first frame"
    response = alice_client.post(
        VIDEO + "start/", {"prompt": "The picture comes alive", "aspect_ratio": "1:1",
                           "duration_seconds": "10", "resolution": "1080p", "image": picks[0]},
        **HTMX, **LONG,
    )  # fmt: skip
    assert response.status_code == 200, response.content
    job = Job.objects.get()
    assert job.params["image_to_video"] is True and job.params["duration_seconds"] == 10
    assert job.params["first_frame_file"].startswith("file_")
    assert "from an image" in response.content.decode()
    code = alice_client.get(f"{VIDEO}code/?job={job.pk}").content.decode()
    assert job.params["first_frame_file"] in code and "/video/generate" in code
