"""Music and video jobs through the console: made with curl-shaped calls and the seeds' field
names, polled on either video path until they succeed, their files kept by the console and
readable by ffprobe; the worst case held when a job starts and settled once when it ends
(the seconds made on success, nothing on failure or cancellation, 402 before the upstream
hears of a job that cannot be covered); another workspace's key gets 404."""

import json
import subprocess
import time

import httpx
import pytest

from console import ledger
from console.actions import create_key
from console.models import EntryKind, Hold, LedgerEntry, UsageRecord
from console.pricing import unit_cost
from gateway.models import Job, StoredFile
from tests.gateway.conftest import charged
from tests.upstream_fixtures import fleet_over
from upstream.fleet import set_fleet


def post(console_url: str, key: str, path: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{console_url}{path}", json=body, headers={"x-api-key": key} | headers, timeout=60
    )


def get(console_url: str, key: str, path: str) -> httpx.Response:
    return httpx.get(f"{console_url}{path}", headers={"x-api-key": key}, timeout=60)


def follow(console_url: str, key: str, path: str, seconds: float = 30) -> dict:
    """Poll a job until it ends; its last answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = get(console_url, key, path)
        assert response.status_code == 200, response.text
        job = response.json()
        assert 0 <= job["progress"] <= 100
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert job["status"] in ("queued", "running")
        time.sleep(0.1)
    raise AssertionError(f"the job did not end: {job}")


def probe(data: bytes, tmp_path) -> dict:
    """What ffprobe reads from a file: its format name and duration."""
    path = tmp_path / "result"
    path.write_bytes(data)
    run = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(run.stdout)


def price(product: str, seconds: int) -> int:
    return unit_cost(product, "", f"{product}_second", seconds)


def test_a_music_job_reaches_succeeded_and_its_wav_downloads_through_the_console(
    console_url, api_key, acme, simulator, tmp_path
):
    start = ledger.balance_of(acme)
    created = post(
        console_url, api_key, "/audio/music",
        {"prompt": "A calm piano piece", "genre": "ambient", "duration_seconds": 3},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["id"] == job["job_id"] and job["id"].startswith("music_job_")
    assert job["status"] in ("queued", "running") and job["object"] == "music.job"
    # Its worst case is held while it runs, in the database.
    hold = Hold.objects.get(request_id=created.headers["x-request-id"])
    assert hold.amount == price("music", 3) and hold.owner == ""
    stored = Job.objects.get(pk=job["id"])
    assert stored.node == "simulator" and stored.upstream_id.startswith("music_job_")
    assert stored.upstream_id != job["id"]

    done = follow(console_url, api_key, f"/audio/music/{job['id']}")
    assert done["status"] == "succeeded" and done["progress"] == 100
    assert done["duration_seconds"] == 3 and "[Verse 1]" in done["lyrics"]
    assert done["audio_url"] == done["url"] and done["url"].startswith(console_url)
    file = StoredFile.objects.get(pk=done["file_id"])
    assert file.workspace_id == acme.pk and file.purpose == "audio"

    download = httpx.get(done["audio_url"], timeout=30)  # a signed link: no key
    assert download.status_code == 200
    assert download.headers["content-type"] == done["content_type"] == "audio/wav"
    info = probe(download.content, tmp_path)
    assert float(info["format"]["duration"]) == pytest.approx(3.0, abs=0.2)

    record = charged(created.headers["x-request-id"])
    assert record.product == "music" and record.units == {"music_second": 3}
    assert record.cost == done["cost"] == price("music", 3) > 0
    assert record.node == "simulator" and record.status == 200
    assert not Hold.objects.filter(request_id=record.request_id).exists()
    assert ledger.balance_of(acme) == start - record.cost


def unsigned(job: dict) -> dict:
    """A job's answer with its links' signatures (which expire) left out."""
    return {name: value.split("?")[0] if name in ("url", "video_url") else value
            for name, value in job.items()}  # fmt: skip


def test_seed_003s_video_shortcut_makes_an_mp4_and_both_poll_paths_answer_the_same_job(
    console_url, api_key, acme, tmp_path
):
    created = post(console_url, api_key, "/video", {"prompt": "A flying dragon over mountains"})
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    assert job_id.startswith("video_job_") and created.json()["job_id"] == job_id

    done = follow(console_url, api_key, f"/video/{job_id}")
    other = get(console_url, api_key, f"/video/jobs/{job_id}").json()
    # The same job and file; each answer signs its link afresh (its expiry moves on).
    assert unsigned(done) == unsigned(other)
    assert done["status"] == "succeeded" and done["duration_seconds"] == 5
    assert done["aspect_ratio"] == "16:9" and done["video_url"] == done["url"]

    download = httpx.get(done["video_url"], timeout=30)
    assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
    info = probe(download.content, tmp_path)
    assert "mp4" in info["format"]["format_name"]
    assert [s["codec_type"] for s in info["streams"]] == ["video"]
    assert float(info["format"]["duration"]) == pytest.approx(5.0, abs=0.2)

    record = charged(created.headers["x-request-id"])
    assert record.product == "video" and record.units == {"video_second": 5}
    assert record.cost == price("video", 5)
    assert record.endpoint == "/v1/video"


def test_a_video_made_with_seed_002s_fields_is_polled_on_the_documented_path(
    console_url, api_key, tmp_path
):
    created = post(
        console_url, api_key, "/video/generate",
        {"prompt": "A paper boat", "aspect_ratio": "1:1", "duration_seconds": 5,
         "resolution": "720p"},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    done = follow(console_url, api_key, f"/video/jobs/{created.json()['job_id']}")
    assert done["status"] == "succeeded"
    info = probe(httpx.get(done["video_url"], timeout=30).content, tmp_path)
    [stream] = info["streams"]
    assert (stream["width"], stream["height"]) == (720, 720)


def test_another_workspace_gets_404_for_a_job_and_its_file(console_url, api_key, charlie, globex):
    job_id = post(console_url, api_key, "/audio/music", {"prompt": "hum"}).json()["id"]
    _key, other = create_key(workspace=globex, name="charlie", created_by=charlie)
    for path in (f"/audio/music/{job_id}",):
        assert get(console_url, other, path).status_code == 404
        deleted = httpx.delete(f"{console_url}{path}", headers={"x-api-key": other}, timeout=30)
        assert deleted.status_code == 404
    assert get(console_url, other, f"/video/{job_id}").status_code == 404
    # A music job is not a video job, even for its own workspace.
    assert get(console_url, api_key, f"/video/{job_id}").status_code == 404
    done = follow(console_url, api_key, f"/audio/music/{job_id}")
    file = get(console_url, other, f"/files/{done['file_id']}/content")
    assert file.status_code == 404


def test_a_job_the_simulator_fails_releases_its_hold_and_charges_nothing(
    console_url, api_key, acme
):
    start = ledger.balance_of(acme)
    created = post(console_url, api_key, "/audio/music", {"prompt": "a song [fail]"})
    assert created.status_code == 200, created.text
    done = follow(console_url, api_key, f"/audio/music/{created.json()['id']}")
    assert done["status"] == "failed" and "failed" in done["error"]
    assert "url" not in done and done["cost"] == 0
    record = charged(created.headers["x-request-id"])
    assert record.cost == 0 and record.status == 502 and record.error
    entries = LedgerEntry.objects.filter(request_id=record.request_id)
    assert sorted(e.kind for e in entries) == [EntryKind.HOLD, EntryKind.RELEASE]
    assert not Hold.objects.filter(request_id=record.request_id).exists()
    assert ledger.balance_of(acme) == start


def test_a_cancelled_job_is_cancelled_upstream_and_charges_nothing(
    console_url, api_key, acme, simulator
):
    start = ledger.balance_of(acme)
    before = simulator.stats()["jobs_cancelled"]
    created = post(console_url, api_key, "/video/generate", {"prompt": "slow clouds"},
                   **{"x-sim-job-seconds": "30"})  # fmt: skip
    job_id = created.json()["id"]
    assert Hold.objects.filter(request_id=created.headers["x-request-id"]).exists()

    cancelled = httpx.delete(
        f"{console_url}/video/jobs/{job_id}", headers={"x-api-key": api_key}, timeout=30
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cost"] == 0
    assert simulator.stats()["jobs_cancelled"] == before + 1
    assert get(console_url, api_key, f"/video/{job_id}").json()["status"] == "cancelled"
    again = httpx.delete(f"{console_url}/video/{job_id}", headers={"x-api-key": api_key})
    assert again.status_code == 200 and again.json()["status"] == "cancelled"

    record = charged(created.headers["x-request-id"])
    assert record.cost == 0 and record.status == 499
    assert not Hold.objects.filter(request_id=record.request_id).exists()
    assert ledger.balance_of(acme) == start


def test_a_finished_job_cannot_be_cancelled(console_url, api_key):
    job_id = post(console_url, api_key, "/audio/music", {"prompt": "a short tune"}).json()["id"]
    follow(console_url, api_key, f"/audio/music/{job_id}")
    refused = httpx.delete(
        f"{console_url}/audio/music/{job_id}", headers={"x-api-key": api_key}, timeout=30
    )
    assert refused.status_code == 409
    assert "succeeded" in refused.json()["detail"]


def test_a_job_that_cannot_be_covered_is_402_before_the_upstream_hears_of_it(
    console_url, simulator, charlie, globex
):
    ledger.grant(workspace=globex, amount=price("music", 10), note="a little", by=None)
    _key, secret = create_key(workspace=globex, name="charlie", created_by=charlie)
    before = simulator.stats()
    refused = post(console_url, secret, "/audio/music", {"prompt": "a long song",
                                                          "duration_seconds": 11})  # fmt: skip
    assert refused.status_code == 402, refused.text
    video = post(console_url, secret, "/video", {"prompt": "a film"})
    assert video.status_code == 402
    after = simulator.stats()
    assert after["jobs_created"] == before["jobs_created"]
    assert after["by_route"].get("POST /v1/audio/music", 0) == before["by_route"].get(
        "POST /v1/audio/music", 0
    )
    assert not Job.objects.filter(workspace=globex).exists()
    assert ledger.balance_of(globex) == price("music", 10)
    # What it can cover, it gets.
    assert post(console_url, secret, "/audio/music", {"prompt": "a song",
                                                     "duration_seconds": 10}).status_code == 200  # fmt: skip


def test_a_job_whose_node_is_gone_fails_with_a_clear_error_and_releases_its_hold(
    console_url, api_key, acme, simulator, upstream_fleet
):
    start = ledger.balance_of(acme)
    created = post(console_url, api_key, "/audio/music", {"prompt": "lost"},
                   **{"x-sim-job-seconds": "30"})  # fmt: skip
    job_id = created.json()["id"]
    set_fleet(fleet_over(simulator, names=["another-node"]))
    try:
        answer = get(console_url, api_key, f"/audio/music/{job_id}").json()
    finally:
        set_fleet(upstream_fleet)
    assert answer["status"] == "failed"
    assert "simulator" in answer["error"] and "no longer" in answer["error"]
    record = charged(created.headers["x-request-id"])
    assert record.cost == 0
    assert not Hold.objects.filter(request_id=record.request_id).exists()
    assert ledger.balance_of(acme) == start


def test_a_bad_job_body_names_the_field(console_url, api_key, simulator):
    before = simulator.stats()["jobs_created"]
    answer = post(console_url, api_key, "/video", {"prompt": "x", "duration_seconds": 7})
    assert answer.status_code == 400 and "duration_seconds" in answer.json()["detail"]
    answer = post(console_url, api_key, "/audio/music", {"duration_seconds": 7})
    assert answer.status_code == 400 and "prompt" in answer.json()["detail"]
    assert simulator.stats()["jobs_created"] == before
    assert UsageRecord.objects.count() == 0


def test_a_keys_budget_counts_a_jobs_worst_case_until_it_ends(console_url, simulator, alice, acme):
    _key, secret = create_key(
        workspace=acme, name="budgeted", created_by=alice, monthly_budget=price("music", 20)
    )
    first = post(console_url, secret, "/audio/music", {"prompt": "one", "duration_seconds": 15})
    assert first.status_code == 200, first.text
    # While it runs, its worst case counts against the budget: another does not fit.
    second = post(console_url, secret, "/audio/music", {"prompt": "two", "duration_seconds": 10})
    assert second.status_code == 402 and "budget" in second.json()["detail"]
    done = follow(console_url, secret, f"/audio/music/{first.json()['id']}")
    assert done["cost"] == price("music", 15)
    third = post(console_url, secret, "/audio/music", {"prompt": "three", "duration_seconds": 5})
    assert third.status_code == 200, third.text


def test_a_key_without_the_scope_may_neither_start_nor_read_a_job(
    console_url, api_key, alice, acme
):
    job_id = post(console_url, api_key, "/video", {"prompt": "a film"}).json()["id"]
    _key, secret = create_key(workspace=acme, name="chat only", created_by=alice, scopes=["chat"])
    assert post(console_url, secret, "/video", {"prompt": "a film"}).status_code == 403
    assert get(console_url, secret, f"/video/{job_id}").status_code == 403


def test_every_poll_of_a_job_reaches_the_node_that_runs_it(
    console_url, api_key, start_simulator, make_fleet
):
    servers = {"node-a": start_simulator(), "node-b": start_simulator()}
    previous = set_fleet(make_fleet(*servers.values(), names=list(servers)))
    try:
        job_ids = [
            post(console_url, api_key, "/audio/music", {"prompt": f"tune {n}"}).json()["id"]
            for n in range(6)
        ]
        for job_id in job_ids:
            assert follow(console_url, api_key, f"/audio/music/{job_id}")["status"] == "succeeded"
    finally:
        set_fleet(previous)
    jobs = Job.objects.filter(pk__in=job_ids)
    for name, server in servers.items():
        created = server.stats()["jobs_created"]
        polls = sum(
            count for route, count in server.stats()["by_route"].items()
            if route.startswith("GET /v1/audio/music/")
        )  # fmt: skip
        mine = jobs.filter(node=name).count()
        assert created == mine
        # A poll sent to the other node would have found no such job there, and failed it.
        assert (polls > 0) == (mine > 0)
        assert set(server.app.jobs.jobs) == {job.upstream_id for job in jobs.filter(node=name)}
