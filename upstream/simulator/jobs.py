"""Music and video jobs: queued -> running (progress 0-100) -> succeeded, with a real file.

A job takes `job_seconds` (a server setting, or the `x-sim-job-seconds` request
header). A prompt containing `[fail]` makes the job end as `failed` halfway through.
`DELETE` on a job's path cancels it (`cancelled`) unless it has finished (409).
Finished files are served at `/files/<job id>.<extension>` without a key, like a CDN.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from upstream.simulator import fields, media
from upstream.simulator.replies import keywords
from upstream.simulator.web import ApiError, Request, Response, decode_data_uri, json_response

logger = logging.getLogger(__name__)

FAIL_MARKER = "[fail]"
MAX_MUSIC_SECONDS = 240


@dataclass
class StoredFile:
    data: bytes
    content_type: str


@dataclass
class Job:
    id: str
    kind: str
    seconds: float
    params: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    created_at: int = field(default_factory=lambda: int(time.time()))
    file_name: str | None = None
    content_type: str | None = None
    error: str | None = None
    cancelled: bool = False

    def status(self) -> str:
        return self.view("")["status"]

    def view(self, origin: str) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        queued_for = self.seconds * 0.2
        failing = self.error is not None or FAIL_MARKER in str(self.params.get("prompt", ""))
        if self.cancelled:
            status, progress = "cancelled", 0
        elif failing and elapsed >= self.seconds / 2:
            status, progress = "failed", 0
            self.error = self.error or "The job failed because its prompt asked it to."
        elif elapsed < queued_for:
            status, progress = "queued", 0
        elif elapsed >= self.seconds and self.file_name is not None:
            status, progress = "succeeded", 100
        else:
            share = (elapsed - queued_for) / max(self.seconds - queued_for, 1e-6)
            status, progress = "running", max(0, min(99, int(share * 100)))
        view: dict[str, Any] = {
            "id": self.id,
            "job_id": self.id,
            "object": f"{self.kind}.job",
            "status": status,
            "progress": progress,
            "created_at": self.created_at,
            **self.params,
        }
        if status == "failed":
            view["error"] = self.error
        if status == "succeeded":
            url = f"{origin}/files/{self.file_name}"
            view["audio_url" if self.kind == "music" else "video_url"] = url
            view["content_type"] = self.content_type
        return view


class JobStore:
    """Jobs and finished files kept in memory; old files are dropped first."""

    def __init__(self, max_files: int = 64) -> None:
        self.jobs: dict[str, Job] = {}
        self.files: OrderedDict[str, StoredFile] = OrderedDict()
        self.max_files = max_files
        self._tasks: set[asyncio.Task[None]] = set()
        self._renders = asyncio.Semaphore(2)

    def start(self, job: Job, render: Any) -> None:
        self.jobs[job.id] = job

        async def run() -> None:
            async with self._renders:
                try:
                    data, content_type, extension = await asyncio.to_thread(render)
                except Exception:
                    logger.exception("Rendering the simulated %s job %s failed", job.kind, job.id)
                    job.error = "Rendering failed."
                    return
            job.file_name = f"{job.id}.{extension}"
            job.content_type = content_type
            self.files[job.file_name] = StoredFile(data, content_type)
            while len(self.files) > self.max_files:
                self.files.popitem(last=False)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def get(self, job_id: str, kind: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None or job.kind != kind:
            raise ApiError(404, f"Job '{job_id}' not found.")
        return job


def _job_seconds(sim: Any, request: Request) -> float:
    header = request.headers.get("x-sim-job-seconds")
    try:
        return max(0.0, float(header)) if header else float(sim.settings.job_seconds)
    except ValueError:
        raise ApiError(400, "The 'x-sim-job-seconds' header must be a number.") from None


def _prompt(body: dict[str, Any]) -> str:
    prompt = fields.required(body, "prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, "The 'prompt' field must be a string.")
    return prompt


def _lyrics(prompt: str) -> str:
    words = keywords(prompt, 4) or ["music"]
    lines = [f"Sing of {w}, sing it slow" for w in words]
    return "[Verse 1]\n" + "\n".join(lines) + "\n[Chorus]\n" + f"{prompt[:60]}, here we go"


async def music_submit(sim: Any, request: Request) -> Response:
    body = request.json()
    prompt = _prompt(body)
    for name in ("genre", "mood", "style"):
        fields.string(body, name)
    seconds = fields.integer(body, "duration_seconds", 1, MAX_MUSIC_SECONDS, 30) or 30
    instrumental = fields.boolean(body, "instrumental")
    lyrics = fields.string(body, "lyrics")
    output = fields.choice(body, "format", ("wav", "mp3"), "wav")
    params = {
        "prompt": prompt,
        "genre": body.get("genre"),
        "mood": body.get("mood"),
        "style": body.get("style"),
        "duration_seconds": seconds,
        "instrumental": instrumental,
        "lyrics": None if instrumental else (lyrics or _lyrics(prompt)),
        "format": output,
    }
    job = Job(f"music_job_{uuid.uuid4().hex[:12]}", "music", _job_seconds(sim, request), params)
    mp3 = output == "mp3" and sim.settings.use_ffmpeg
    sim.jobs.start(job, lambda: media.render_music(prompt, seconds, mp3=mp3))
    sim.stats.jobs_created += 1
    return json_response(job.view(request.origin))


async def music_get(sim: Any, request: Request) -> Response:
    job = sim.jobs.get(request.path_params["job_id"], "music")
    return json_response(job.view(request.origin))


async def video_submit(sim: Any, request: Request) -> Response:
    body = request.json()
    prompt = _prompt(body)
    aspect = fields.choice(body, "aspect_ratio", ("16:9", "9:16", "1:1"), "16:9")
    resolution = fields.choice(body, "resolution", ("720p", "1080p"), "720p")
    seconds = fields.integer(body, "duration_seconds", 5, 10, 5) or 5
    if seconds not in (5, 10):
        raise ApiError(400, "The 'duration_seconds' field must be 5 or 10.")
    first = fields.string(body, "first_frame")
    first_frame = None
    if first:
        if not first.startswith("data:"):
            raise ApiError(400, "The 'first_frame' field must be a data: URI on this simulator.")
        first_frame = decode_data_uri(first, "first_frame")[1]
        media_type = first.split(";", 1)[0][5:]
        if not media_type.startswith("image/"):
            raise ApiError(400, "The 'first_frame' field must be an image.")
    size = media.video_format(aspect, resolution)
    params = {
        "prompt": prompt,
        "duration_seconds": seconds,
        "aspect_ratio": aspect,
        "resolution": resolution,
        "width": size.width,
        "height": size.height,
        "image_to_video": first_frame is not None,
    }
    job = Job(f"video_job_{uuid.uuid4().hex[:12]}", "video", _job_seconds(sim, request), params)
    ffmpeg = sim.settings.use_ffmpeg
    sim.jobs.start(
        job,
        lambda: media.render_video(prompt, seconds, size, ffmpeg=ffmpeg, first_frame=first_frame),
    )
    sim.stats.jobs_created += 1
    return json_response(job.view(request.origin))


async def video_get(sim: Any, request: Request) -> Response:
    job = sim.jobs.get(request.path_params["job_id"], "video")
    return json_response(job.view(request.origin))


async def cancel(sim: Any, request: Request) -> Response:
    kind = "music" if request.path.startswith("/v1/audio/") else "video"
    job = sim.jobs.get(request.path_params["job_id"], kind)
    if job.status() in ("succeeded", "failed"):
        raise ApiError(409, f"Job '{job.id}' has finished; it cannot be cancelled.")
    job.cancelled = True
    sim.stats.jobs_cancelled += 1
    return json_response(job.view(request.origin))


async def file_get(sim: Any, request: Request) -> Response:
    stored = sim.jobs.files.get(request.path_params["name"])
    if stored is None:
        raise ApiError(404, "File not found.")
    body = b"" if request.method == "HEAD" else stored.data
    headers = {"Cache-Control": "private, max-age=3600"}
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(stored.data))
    return Response(body, 200, stored.content_type, headers)
