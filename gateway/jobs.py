"""Music and video, the products that take a while: `POST /v1/audio/music` and `GET`/`DELETE
/v1/audio/music/{job_id}`; `POST /v1/video/generate` (and seed 003's `POST /v1/video`) and
`GET`/`DELETE` on both `/v1/video/{job_id}` and `/v1/video/jobs/{job_id}`.

Creating a job holds its worst case, the seconds asked for at the price per second, in
the database (402 before the upstream hears of it), then starts it on a node. The job
gets the console's own id, which remembers the workspace, the key, the node and the
node's job id: a poll reaches that node, and another workspace's key gets 404. The job
moves on and is settled by the runner (gateway.job_runner) whether or not anyone polls;
a poll also moves it on at once. A job object carries `id` and `job_id`, `status`
(`queued`, `running` with `progress` 0-100, `succeeded`, `failed` with `error`, or
`cancelled`), and once it has succeeded the console's own signed link to the result,
kept in its media storage, with the file id.
"""

import logging
from typing import Literal

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from pydantic import BaseModel, ConfigDict, Field

from console import db, ledger
from console.models import Hold
from console.usage import cost_of
from gateway import job_runner, media, pipeline
from gateway.errors import ApiError
from gateway.http import MODEL_CALL_ERRORS, Operation, endpoint, json_body, validate
from gateway.models import Job, JobKind, JobStatus, StoredFile, new_job_id
from upstream.errors import UpstreamError
from upstream.fleet import get_fleet

logger = logging.getLogger(__name__)

MUSIC_PATH = "/v1/audio/music"
MUSIC_JOB_PATH = "/v1/audio/music/{job_id}"
VIDEO_PATH = "/v1/video/generate"
VIDEO_SHORTCUT_PATH = "/v1/video"
VIDEO_JOB_PATH = "/v1/video/{job_id}"
VIDEO_JOBS_PATH = "/v1/video/jobs/{job_id}"
MAX_PROMPT = 32_000
MAX_MUSIC_SECONDS = 240
POLL_ERRORS = (401, 403, 404)


class MusicRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)
    model: str | None = Field(default=None, min_length=1, max_length=128)
    genre: str | None = Field(default=None, max_length=200)
    mood: str | None = Field(default=None, max_length=200)
    style: str | None = Field(default=None, max_length=200)
    duration_seconds: int = Field(
        default=30, ge=1, le=MAX_MUSIC_SECONDS,
        description="Held in full when the job starts; charged for the seconds delivered.",
    )  # fmt: skip
    instrumental: bool = False
    lyrics: str | None = Field(default=None, max_length=10_000)
    format: Literal["wav", "mp3"] = "wav"


class VideoRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)
    model: str | None = Field(default=None, min_length=1, max_length=128)
    first_frame: str | None = Field(
        default=None,
        description="Image to start from: a data: URI, a file id or a link to this workspace's file.",
    )
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9"
    duration_seconds: Literal[5, 10] = 5
    resolution: Literal["720p", "1080p"] = "720p"


# Creating ---------------------------------------------------------------------------


def _open(
    caller: pipeline.Caller, *, kind: str, request_id: str, endpoint: str, model: str,
    params: dict, seconds: int,
) -> Job:  # fmt: skip
    """The job's row and its hold, in one transaction (on a database thread): 402 when the
    balance or a budget cannot cover its worst case."""
    amount = cost_of(
        product=kind, model=model, tokens_in=0, tokens_out=0,
        units={job_runner.unit_of(kind): seconds},
    )  # fmt: skip
    key = caller.key
    try:
        with transaction.atomic():
            held = None
            if amount > 0:
                held = ledger.hold(
                    workspace_id=caller.workspace_id, api_key_id=key.id if key else None,
                    key_budget=key.monthly_budget if key else None, amount=amount,
                    request_id=request_id,
                )  # fmt: skip
                # The hold outlives this worker: it names none, so none's leaving returns it.
                Hold.objects.filter(request_id=request_id).update(owner="")
            return Job.objects.create(
                id=new_job_id(kind), kind=kind, workspace_id=caller.workspace_id,
                api_key_id=key.id if key else None, user_id=caller.user_id,
                source=caller.source, request_id=request_id, endpoint=endpoint[:64],
                model=model, params=params, seconds=seconds,
                held=held.amount if held else 0, hold_month=held.month if held else "",
            )  # fmt: skip
    except ledger.PaymentRequired as exc:
        raise ApiError(402, str(exc), code="insufficient_balance") from None


def _submitted(job_id: str, *, node: str, upstream_id: str, answer: dict) -> None:
    status = answer.get("status")
    progress = answer.get("progress")
    Job.objects.filter(pk=job_id, settled_at__isnull=True).update(
        node=node[:64],
        upstream_id=upstream_id[:128],
        status=JobStatus.RUNNING if status in ("running", "processing") else JobStatus.QUEUED,
        progress=progress if isinstance(progress, int) and 0 <= progress <= 100 else 0,
    )


async def create(
    caller: pipeline.Caller,
    body: dict,
    *,
    kind: str,
    request_id: str,
    request: HttpRequest | None = None,
    endpoint: str = "",
) -> dict:
    """Start a music or video job for `body`: checked, its worst case held, started on a
    node; the job object."""
    spec = validate(MusicRequest if kind == JobKind.MUSIC else VideoRequest, body)
    pipeline.authorize(caller, scope=kind, model=spec.model)
    upstream_body = spec.model_dump(exclude_none=True)
    params = spec.model_dump(exclude={"model", "first_frame"})
    if isinstance(spec, VideoRequest):
        params["image_to_video"] = spec.first_frame is not None
        if spec.first_frame is not None:
            upstream_body["first_frame"] = await media.image_input(
                caller.workspace_id, spec.first_frame, "first_frame"
            )
    await pipeline.limit(caller, request)
    job = await db.run(
        _open, caller, kind=kind, request_id=request_id,
        endpoint=endpoint or job_runner.SUBMIT_PATHS[kind], model=spec.model or "",
        params=params, seconds=spec.duration_seconds,
    )  # fmt: skip
    try:
        response = await get_fleet().request(
            "POST", job_runner.SUBMIT_PATHS[kind], json=upstream_body, model=spec.model or None,
            headers=pipeline.fault_headers(request),
        )  # fmt: skip
    except UpstreamError as exc:
        error = pipeline.upstream_error(exc)
        await db.run(
            job_runner.settle, job.id, status=JobStatus.FAILED, error=exc.detail,
            http_status=error.status, node=exc.node,
        )  # fmt: skip
        raise error from None
    try:
        answer = response.json()
        upstream_id = answer.get("id") or answer.get("job_id")
        if not isinstance(upstream_id, str) or not upstream_id:
            raise ValueError("no job id")
    except (ValueError, AttributeError):
        await db.run(
            job_runner.settle, job.id, status=JobStatus.FAILED,
            error="The upstream's answer named no job.", http_status=502, node=response.node,
        )  # fmt: skip
        raise ApiError(
            502, "The upstream's answer could not be used: it named no job.", code="upstream_error"
        ) from None
    await db.run(_submitted, job.id, node=response.node, upstream_id=upstream_id, answer=answer)
    return describe(await db.run(_load, job.id), media.base_url(request))


# Reading and cancelling -------------------------------------------------------------


def _load(job_id: str) -> Job:
    return Job.objects.select_related("file").get(pk=job_id)


async def find(caller: pipeline.Caller, job_id: str, kind: str) -> Job:
    """The workspace's job of this kind; 404 for any other (another workspace's too)."""
    pipeline.authorize(caller, scope=kind)
    job = await (
        Job.objects.for_workspace(caller.workspace_id)
        .filter(pk=job_id, kind=kind)
        .select_related("file")
        .afirst()
    )
    if job is None:
        raise ApiError(404, f"No {kind} job {job_id} in this workspace.", code="not_found")
    return job


async def poll(
    caller: pipeline.Caller, job_id: str, *, kind: str, request: HttpRequest | None = None
) -> dict:
    """The job as it is now: an unfinished one is first asked after on its node."""
    job = await find(caller, job_id, kind)
    if job.settled_at is None and job.upstream_id:
        await job_runner.poll_now(job.id)
        job = await db.run(_load, job.id)
    return describe(job, media.base_url(request))


async def cancel(
    caller: pipeline.Caller, job_id: str, *, kind: str, request: HttpRequest | None = None
) -> dict:
    """Cancel a job on its node where it can be, and release its hold; 409 when it has
    finished already."""
    job = await find(caller, job_id, kind)
    if job.settled_at is None and job.upstream_id and job.node in get_fleet().node_names():
        path = job_runner.POLL_PATHS[kind].format(job.upstream_id)
        try:
            await get_fleet().request("DELETE", path, node=job.node)
        except UpstreamError as exc:
            if exc.status == 409:  # it ended on the node meanwhile: take it as it ended
                await job_runner.poll_now(job.id)
            else:  # the node cannot cancel it: it is no longer followed, nor charged
                logger.info("the node could not cancel the job %s: %s", job.id, exc.detail)
    await db.run(
        job_runner.settle, job.id, status=JobStatus.CANCELLED, error="Cancelled by the caller."
    )
    job = await db.run(_load, job.id)
    if job.status != JobStatus.CANCELLED:
        raise ApiError(
            409, f"The job {job.id} has {job.status}; it cannot be cancelled.", code="job_finished"
        )
    return describe(job, media.base_url(request))


def describe(job: Job, base: str = "") -> dict:
    """A job as the API answers it."""
    answer = {
        "id": job.id,
        "job_id": job.id,
        "object": f"{job.kind}.job",
        "status": job.status,
        "progress": job.progress,
        "created_at": int(job.created_at.timestamp()),
        "model": job.model or None,
        **job.params,
    }
    if job.status == JobStatus.SUCCEEDED:
        answer |= job.result
        file: StoredFile | None = job.file
        if file is not None:
            url = media.signed_url(file, base)
            answer |= {
                "url": url,
                job_runner.RESULT_FIELDS[job.kind]: url,
                "file_id": file.id,
                "content_type": file.content_type,
            }
    elif job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        answer["error"] = job.error or f"The job {job.status}."
    if job.settled_at is not None:
        answer["cost"] = job.cost
    return answer


# Views ------------------------------------------------------------------------------


async def _create(request: HttpRequest, kind: str) -> HttpResponse:
    answer = await create(
        request.caller, json_body(request, media=kind == JobKind.VIDEO), kind=kind,
        request_id=request.request_id, request=request, endpoint=request.path,
    )  # fmt: skip
    return JsonResponse(answer)


async def _job(request: HttpRequest, job_id: str, kind: str) -> HttpResponse:
    if request.method == "DELETE":
        answer = await cancel(request.caller, job_id, kind=kind, request=request)
    else:
        answer = await poll(request.caller, job_id, kind=kind, request=request)
    return JsonResponse(answer)


@endpoint("POST")
async def music_create(request: HttpRequest) -> HttpResponse:
    return await _create(request, JobKind.MUSIC)


@endpoint("GET", "DELETE")
async def music_job(request: HttpRequest, job_id: str) -> HttpResponse:
    return await _job(request, job_id, JobKind.MUSIC)


@endpoint("POST")
async def video_create(request: HttpRequest) -> HttpResponse:
    return await _create(request, JobKind.VIDEO)


@endpoint("GET", "DELETE")
async def video_job(request: HttpRequest, job_id: str) -> HttpResponse:
    return await _job(request, job_id, JobKind.VIDEO)


_NULLABLE_STRING = {"type": ["string", "null"]}
SCHEMAS = {
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "job_id": {"type": "string"},
            "object": {"enum": ["music.job", "video.job"]},
            "status": {"enum": [status.value for status in JobStatus]},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "created_at": {"type": "integer"},
            "model": _NULLABLE_STRING,
            "prompt": {"type": "string"},
            "duration_seconds": {"type": "integer"},
            "url": {"type": "string"},
            "audio_url": {"type": "string"},
            "video_url": {"type": "string"},
            "file_id": {"type": "string"},
            "content_type": {"type": "string"},
            "lyrics": _NULLABLE_STRING,
            "error": {"type": "string"},
            "cost": {"type": "integer", "description": "micro-units, once the job has ended"},
        },
        "required": ["id", "job_id", "object", "status", "progress", "created_at"],
    },
}

_MUSIC_EXAMPLE = {"prompt": "A calm piano piece", "genre": "ambient", "duration_seconds": 5}
_VIDEO_EXAMPLE = {"prompt": "A flying dragon over mountains", "duration_seconds": 5}

OPERATIONS = [
    Operation(
        MUSIC_PATH, "post", "Start a music job (held per second asked for, charged per second made)",
        MODEL_CALL_ERRORS, "Job", request=MusicRequest, example=_MUSIC_EXAMPLE,
        view=music_create, name="music",
    ),
    Operation(
        MUSIC_JOB_PATH, "get", "A music job: its status, and its file once it has succeeded",
        POLL_ERRORS, "Job", view=music_job, name="music_job",
    ),
    Operation(
        MUSIC_JOB_PATH, "delete", "Cancel a music job (nothing is charged)",
        (*POLL_ERRORS, 409), "Job", view=music_job, name="music_job",
    ),
    Operation(
        VIDEO_PATH, "post", "Start a video job (held per second asked for, charged per second made)",
        MODEL_CALL_ERRORS, "Job", request=VideoRequest, example=_VIDEO_EXAMPLE,
        view=video_create, name="video_generate",
    ),
    Operation(
        VIDEO_SHORTCUT_PATH, "post", "Start a video job from a prompt (5 seconds, 16:9, 720p)",
        MODEL_CALL_ERRORS, "Job", request=VideoRequest,
        example={"prompt": "A flying dragon over mountains"}, view=video_create, name="video",
    ),
    Operation(
        VIDEO_JOBS_PATH, "get", "A video job: its status, and its file once it has succeeded",
        POLL_ERRORS, "Job", view=video_job, name="video_jobs_job",
    ),
    Operation(
        VIDEO_JOBS_PATH, "delete", "Cancel a video job (nothing is charged)",
        (*POLL_ERRORS, 409), "Job", view=video_job, name="video_jobs_job",
    ),
    Operation(
        VIDEO_JOB_PATH, "get", "A video job (the same as /v1/video/jobs/{job_id})",
        POLL_ERRORS, "Job", view=video_job, name="video_job",
    ),
    Operation(
        VIDEO_JOB_PATH, "delete", "Cancel a video job (nothing is charged)",
        (*POLL_ERRORS, 409), "Job", view=video_job, name="video_job",
    ),
]  # fmt: skip
