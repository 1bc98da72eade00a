"""Music and video jobs: queued, running with progress, succeeded, file downloadable."""

import asyncio
import io
import json
import shutil
import subprocess
import wave

import pytest
from PIL import Image

from upstream import client
from upstream.errors import UpstreamError


async def follow(poll, job_id: str, node: str) -> list[dict]:
    """Poll until the job ends; every distinct (status, progress) seen, in order."""
    seen: list[dict] = []
    for _ in range(400):
        job = (await poll(job_id, node=node)).json()
        if not seen or (job["status"], job["progress"]) != (
            seen[-1]["status"],
            seen[-1]["progress"],
        ):
            seen.append(job)
        if job["status"] in ("succeeded", "failed"):
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"the job never finished: {seen[-1]}")


def assert_lifecycle(seen: list[dict]) -> None:
    statuses = [job["status"] for job in seen]
    assert statuses[0] == "queued"
    assert "running" in statuses
    assert statuses[-1] == "succeeded"
    running = [job["progress"] for job in seen if job["status"] == "running"]
    assert running == sorted(running)
    assert all(0 <= p <= 100 for p in running)
    assert seen[-1]["progress"] == 100


async def test_a_music_job_ends_with_a_wav_of_the_requested_duration(upstream_fleet):
    fleet = upstream_fleet
    submitted = await client.music_submit(
        fleet, {"prompt": "calm piano by the sea", "duration_seconds": 3, "instrumental": True}
    )
    job = submitted.json()
    assert job["status"] == "queued"
    assert job["id"] == job["job_id"]
    assert job["id"].startswith("music_job_")
    seen = await follow(
        lambda i, node: client.music_poll(fleet, i, node=node), job["id"], submitted.node
    )
    assert_lifecycle(seen)
    done = seen[-1]
    assert done["duration_seconds"] == 3
    file = await client.download(fleet, done["audio_url"], node=submitted.node)
    assert file.content_type == "audio/wav"
    with wave.open(io.BytesIO(file.content)) as reader:
        assert reader.getnframes() / reader.getframerate() == pytest.approx(3.0, abs=0.01)


async def test_a_music_job_writes_lyrics_unless_instrumental(upstream_fleet):
    job = (await client.music_submit(upstream_fleet, {"prompt": "summer love song"})).json()
    assert "[Verse 1]" in job["lyrics"]


def open_container(data: bytes, content_type: str) -> dict:
    """What ffprobe (or Pillow, for the WebP fallback) sees in a video file."""
    if content_type == "image/webp":
        image = Image.open(io.BytesIO(data))
        return {"frames": image.n_frames, "width": image.width, "height": image.height}
    assert data[4:8] == b"ftyp"
    if shutil.which("ffprobe") is None:
        return {"frames": None}
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", "pipe:0"],
        input=data,
        capture_output=True,
        check=True,
    )
    info = json.loads(probe.stdout)
    video = info["streams"][0]
    return {
        "frames": int(video.get("nb_frames") or 0),
        "width": video["width"],
        "height": video["height"],
        "duration": float(info["format"]["duration"]),
    }


async def test_a_video_job_ends_with_a_file_that_opens(upstream_fleet):
    fleet = upstream_fleet
    submitted = await client.video_submit(
        fleet, {"prompt": "a paper boat on a river", "aspect_ratio": "1:1", "duration_seconds": 5}
    )
    job = submitted.json()
    assert job["id"].startswith("video_job_") and job["job_id"] == job["id"]
    seen = await follow(
        lambda i, node: client.video_poll(fleet, i, node=node), job["id"], submitted.node
    )
    assert_lifecycle(seen)
    done = seen[-1]
    file = await client.download(fleet, done["video_url"], node=submitted.node)
    info = open_container(file.content, file.content_type)
    if file.content_type == "video/mp4" and info["frames"] is not None:
        assert (info["width"], info["height"]) == (720, 720)
        assert info["duration"] == pytest.approx(5.0, abs=0.2)


async def test_without_ffmpeg_a_video_is_an_animated_webp(start_simulator, make_fleet):
    server = start_simulator(use_ffmpeg=False, job_seconds=0.2)
    fleet = make_fleet(server)
    submitted = await client.video_submit(fleet, {"prompt": "snow", "aspect_ratio": "9:16"})
    seen = await follow(
        lambda i, node: client.video_poll(fleet, i, node=node),
        submitted.json()["id"],
        submitted.node,
    )
    file = await client.download(fleet, seen[-1]["video_url"], node=submitted.node)
    info = open_container(file.content, file.content_type)
    assert file.content_type == "image/webp"
    assert info["frames"] > 10
    assert info["height"] > info["width"]
    await fleet.aclose()


async def test_both_video_poll_paths_answer(upstream_fleet):
    submitted = await client.video_submit(upstream_fleet, {"prompt": "clouds"})
    job_id = submitted.json()["id"]
    short = await upstream_fleet.request("GET", f"/v1/video/{job_id}", node=submitted.node)
    long = await upstream_fleet.request("GET", f"/v1/video/jobs/{job_id}", node=submitted.node)
    assert short.json()["id"] == long.json()["id"] == job_id


async def test_an_unknown_job_is_404(upstream_fleet):
    with pytest.raises(UpstreamError) as caught:
        await client.music_poll(upstream_fleet, "music_job_nope", node="simulator")
    assert caught.value.status == 404
    with pytest.raises(UpstreamError) as caught:
        await client.video_poll(upstream_fleet, "video_job_nope", node="simulator")
    assert caught.value.status == 404


async def test_a_prompt_marked_fail_makes_the_job_fail(upstream_fleet):
    fleet = upstream_fleet
    submitted = await client.music_submit(fleet, {"prompt": "noise [fail]", "duration_seconds": 1})
    seen = await follow(
        lambda i, node: client.music_poll(fleet, i, node=node),
        submitted.json()["id"],
        submitted.node,
    )
    assert seen[-1]["status"] == "failed"
    assert seen[-1]["error"]


async def test_video_rejects_a_duration_it_cannot_make(upstream_fleet):
    with pytest.raises(UpstreamError) as caught:
        await client.video_submit(upstream_fleet, {"prompt": "x", "duration_seconds": 7})
    assert caught.value.status == 400
    assert "duration_seconds" in caught.value.detail


async def test_a_job_cancelled_before_it_ends_stays_cancelled_and_a_finished_one_cannot_be(
    start_simulator, make_fleet
):
    server = start_simulator(job_seconds=0.3)
    fleet = make_fleet(server)
    submitted = await client.video_submit(
        fleet, {"prompt": "rain"}, headers={"x-sim-job-seconds": "30"}
    )
    job_id = submitted.json()["id"]
    cancelled = await fleet.request("DELETE", f"/v1/video/{job_id}", node=submitted.node)
    assert cancelled.json()["status"] == "cancelled"
    assert (await client.video_poll(fleet, job_id, node=submitted.node)).json()[
        "status"
    ] == "cancelled"
    assert server.stats()["jobs_cancelled"] == 1

    music = await client.music_submit(fleet, {"prompt": "a tune", "duration_seconds": 1})
    seen = await follow(
        lambda i, node: client.music_poll(fleet, i, node=node), music.json()["id"], music.node
    )
    assert seen[-1]["status"] == "succeeded"
    with pytest.raises(UpstreamError) as caught:
        await fleet.request("DELETE", f"/v1/audio/music/{music.json()['id']}", node=music.node)
    assert caught.value.status == 409
    await fleet.aclose()
