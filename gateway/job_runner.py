"""Music and video jobs move on, and are settled once, whoever polls them.

A job is advanced one step at a time by whoever has claimed it: the background runner
(every serving worker runs one unless `GATEWAY_JOB_RUNNER` is off, and `manage.py
runjobs` runs one on its own), or a caller's poll. A step asks the job's own node how
the job is doing; a finished job's file is copied into the console's media storage and
the job is settled: its usage record written and its hold replaced by what it cost.

Claims. A step begins with a conditional UPDATE that takes the job only if nobody
holds it (`claimed_until` is empty or past), and ends by giving the claim back with
the time of the next poll (sooner at first, then less often: `_backoff`). A runner that
dies mid-step leaves its claim to expire (`GATEWAY_JOB_CLAIM_SECONDS`), and the job is
taken up again by another. Claims make double work rare; they do not make it
harmless, so settling is separately exactly once: it is a conditional UPDATE of
`settled_at` from empty, in the same transaction as the usage record and the ledger
entries, so of two runners that both finish a job only one settles it (the other
deletes the copy it made).

Money. A job's worst case (the seconds asked for, at the price per second) was held in
the database when it was created, in a hold that names no worker, so that no worker's
leaving returns it. Settling charges the seconds delivered (never more than held) on
success and nothing on failure or cancellation.
"""

import asyncio
import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import storages
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from console import db, ledger, usage, workers
from console.models import ApiKey, BillingAccount
from gateway import media
from gateway.models import Job, JobStatus, Purpose, StoredFile
from upstream.errors import UpstreamError
from upstream.fleet import get_fleet

logger = logging.getLogger(__name__)

SUBMIT_PATHS = {"music": "/v1/audio/music", "video": "/v1/video/generate"}
POLL_PATHS = {"music": "/v1/audio/music/{}", "video": "/v1/video/jobs/{}"}
RESULT_FIELDS = {"music": "audio_url", "video": "video_url"}
# What a result may be, by its first bytes (without ffmpeg a video is an animated WebP).
RESULT_TYPES = {
    "music": ("audio/wav", "audio/mpeg", "audio/ogg"),
    "video": ("video/mp4", "video/webm", "image/webp"),
}
# A job whose creating request died before the node's answer was saved.
SUBMIT_GRACE = timedelta(minutes=2)
BATCH = 20


def unit_of(kind: str) -> str:
    return f"{kind}_second"


def owner_name() -> str:
    """This process's name on the claims it takes."""
    return f"jobs-{workers.current()}"


def _backoff(polls: int) -> float:
    """Seconds until the next poll of a job polled `polls` times: soon, then less often."""
    return min(settings.GATEWAY_JOB_POLL_MAX_SECONDS, 0.5 * 1.5 ** min(polls, 20))


def _free(now) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


# The database side (on a database thread) ------------------------------------------


def claim_due(owner: str, limit: int = BATCH) -> list[str]:
    """Claim jobs due for a poll (or never submitted, and past their grace): their ids."""
    now = timezone.now()
    due = (
        Job.objects.unsettled()
        .filter(_free(now), next_poll_at__lte=now)
        .exclude(upstream_id="", created_at__gt=now - SUBMIT_GRACE)
        .order_by("next_poll_at")
        .values_list("pk", flat=True)[:limit]
    )
    return [job_id for job_id in list(due) if claim(job_id, owner)]


def claim(job_id: str, owner: str) -> bool:
    """Take a job that is unsettled and not claimed by another (or whose claim expired)."""
    now = timezone.now()
    until = now + timedelta(seconds=settings.GATEWAY_JOB_CLAIM_SECONDS)
    return bool(
        Job.objects.unsettled()
        .filter(_free(now), pk=job_id)
        .update(claimed_by=owner, claimed_until=until)
    )


def release(job_id: str, owner: str, **changes) -> None:
    """Give a claim back, with what the step learnt."""
    Job.objects.filter(pk=job_id, claimed_by=owner).update(
        claimed_by="", claimed_until=None, **changes
    )


def settle(
    job_id: str,
    *,
    status: str,
    error: str = "",
    seconds: int = 0,
    file_id: str | None = None,
    result: dict | None = None,
    http_status: int | None = None,
    node: str | None = None,
) -> bool:
    """End a job and book it, once: whether this call did (False: it was settled already).

    The usage record is written and the hold settled in the same transaction as the
    conditional UPDATE that marks the job settled, so a job is never charged twice and
    never left settled without its record.
    """
    now = timezone.now()
    changes = {
        "status": status,
        "error": error[:255],
        "file_id": file_id,
        "settled_at": now,
        "claimed_by": "",
        "claimed_until": None,
    }
    if result is not None:
        changes["result"] = result
    if status == JobStatus.SUCCEEDED:
        changes["progress"] = 100
    if node:
        changes["node"] = node[:64]
    with transaction.atomic():
        if not Job.objects.unsettled().filter(pk=job_id).update(**changes):
            return False
        job = Job.objects.get(pk=job_id)
        delivered = min(seconds, job.seconds) if status == JobStatus.SUCCEEDED else 0
        held = None
        if job.held:
            held = ledger.Held(
                job.request_id,
                job.workspace_id,
                str(job.api_key_id) if job.api_key_id else None,
                job.held,
                job.hold_month,
                BillingAccount.objects.filter(workspace_id=job.workspace_id)
                .values_list("monthly_limit", flat=True)
                .first(),
            )
        budget = (
            ApiKey.objects.filter(pk=job.api_key_id)
            .values_list("monthly_budget", flat=True)
            .first()
            if job.api_key_id
            else None
        )
        record = usage.book(
            held=held,
            key_budget=budget,
            request_id=job.request_id,
            workspace_id=job.workspace_id,
            api_key_id=job.api_key_id,
            user_id=job.user_id,
            source=job.source,
            product=job.kind,
            endpoint=job.endpoint,
            model=job.model,
            node=job.node,
            status=http_status or _http_status(status),
            stream=False,
            tokens_in=0,
            tokens_out=0,
            units={unit_of(job.kind): delivered} if delivered else {},
            latency_ms=min(int((now - job.created_at).total_seconds() * 1000), 2**31 - 1),
            ttft_ms=None,
            error=error[:255],
            created_at=now,
        )
        Job.objects.filter(pk=job_id).update(cost=record.cost)
    return True


def _http_status(status: str) -> int:
    return {JobStatus.SUCCEEDED: 200, JobStatus.CANCELLED: 499}.get(status, 502)


def _get(job_id: str) -> Job | None:
    return Job.objects.filter(pk=job_id).first()


def _delete_file(file_id: str) -> None:
    for file in StoredFile.objects.filter(pk=file_id):
        storages["media"].delete(file.storage_name)
        file.delete()


# One step ---------------------------------------------------------------------------


async def advance(job_id: str, owner: str) -> None:
    """One step of a job this owner has claimed: poll its node, and keep and settle it
    when it has ended. The claim is given back (or the job settled) whatever happens."""
    job = await db.run(_get, job_id)
    if job is None or job.settled_at is not None:
        return
    try:
        await _step(job, owner)
    except Exception:
        logger.exception("could not advance the job %s", job_id)
        await db.run(release, job_id, owner, next_poll_at=_later(job), polls=job.polls + 1)


def _later(job: Job):
    return timezone.now() + timedelta(seconds=_backoff(job.polls))


async def _step(job: Job, owner: str) -> None:
    if not job.upstream_id:
        await db.run(
            settle, job.id, status=JobStatus.FAILED,
            error="The job was never accepted by an upstream node.",
        )  # fmt: skip
        return
    fleet = get_fleet()
    if job.node not in fleet.node_names():
        await db.run(
            settle, job.id, status=JobStatus.FAILED,
            error=f"The upstream node {job.node!r} that ran this job is no longer configured.",
        )  # fmt: skip
        return
    try:
        response = await fleet.request(
            "GET", POLL_PATHS[job.kind].format(job.upstream_id), node=job.node
        )
        answer = response.json()
        if not isinstance(answer, dict):
            raise ValueError("not an object")
    except UpstreamError as exc:
        if exc.status == 404:
            await db.run(
                settle, job.id, status=JobStatus.FAILED,
                error=f"The upstream node {job.node!r} no longer knows this job.",
            )  # fmt: skip
            return
        await _unreachable(job, owner, exc.detail)
        return
    except ValueError:
        await _unreachable(job, owner, "the node's answer was not a JSON object")
        return
    status = answer.get("status")
    if status == "succeeded":
        await _keep(job, owner, answer)
    elif status in ("failed", "cancelled"):
        error = answer.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        await db.run(
            settle, job.id,
            status=JobStatus.CANCELLED if status == "cancelled" else JobStatus.FAILED,
            error=str(error or f"The upstream job {status}."),
        )  # fmt: skip
    else:
        progress = answer.get("progress")
        progress = progress if isinstance(progress, int) and 0 <= progress <= 100 else job.progress
        await db.run(
            release, job.id, owner,
            status=JobStatus.RUNNING if status in ("running", "processing") else JobStatus.QUEUED,
            progress=progress, polls=job.polls + 1, next_poll_at=_later(job),
            unreachable_since=None,
        )  # fmt: skip


async def _unreachable(job: Job, owner: str, why: str) -> None:
    """The node did not answer usefully: try again later, and give up after a while."""
    now = timezone.now()
    since = job.unreachable_since or now
    if now - since >= timedelta(seconds=settings.GATEWAY_JOB_GIVE_UP_SECONDS):
        await db.run(
            settle, job.id, status=JobStatus.FAILED,
            error=f"The upstream node {job.node!r} did not answer for this job: {why}",
        )  # fmt: skip
        return
    logger.warning("the job %s could not be polled: %s", job.id, why)
    await db.run(
        release, job.id, owner, unreachable_since=since, polls=job.polls + 1,
        next_poll_at=_later(job),
    )  # fmt: skip


async def _keep(job: Job, owner: str, answer: dict) -> None:
    """A succeeded job: its file copied into storage, then the job settled."""
    url = answer.get(RESULT_FIELDS[job.kind]) or answer.get("url")
    if not isinstance(url, str):
        await db.run(
            settle, job.id, status=JobStatus.FAILED,
            error="The upstream job succeeded without a file.",
        )  # fmt: skip
        return
    try:
        data = (await get_fleet().download(url, node=job.node)).content
    except UpstreamError as exc:
        await _unreachable(job, owner, f"its file could not be fetched: {exc.detail}")
        return
    kind = media.sniff(data)
    if kind not in RESULT_TYPES[job.kind]:
        await db.run(
            settle, job.id, status=JobStatus.FAILED,
            error=f"The upstream job's file is not {job.kind} the console can keep.",
        )  # fmt: skip
        return
    file = await media.keep(
        workspace_id=job.workspace_id, data=data, content_type=kind,
        purpose=Purpose.AUDIO if job.kind == "music" else Purpose.VIDEO,
        request_id=job.request_id,
    )  # fmt: skip
    seconds = answer.get("duration_seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
        seconds = job.seconds
    result = {"duration_seconds": min(int(round(seconds)), job.seconds), "content_type": kind}
    for name in ("lyrics", "aspect_ratio", "resolution", "width", "height"):
        if name in answer:
            result[name] = answer[name]
    settled = await db.run(
        settle, job.id, status=JobStatus.SUCCEEDED, seconds=result["duration_seconds"],
        file_id=file.id, result=result,
    )  # fmt: skip
    if not settled:
        logger.info("the job %s was settled by another runner; its copy is removed", job.id)
        await db.run(_delete_file, file.id)


async def poll_now(job_id: str) -> None:
    """A caller's poll: one step now, unless another holds the job (it is moving)."""
    owner = owner_name()
    if await db.run(claim, job_id, owner):
        await advance(job_id, owner)


# The runner -------------------------------------------------------------------------


class Runner:
    """Claims due jobs and advances them, over and over, until stopped."""

    def __init__(self, *, owner: str | None = None, interval: float | None = None) -> None:
        self.owner = owner or owner_name()
        self.interval = interval if interval is not None else settings.GATEWAY_JOB_IDLE_SECONDS
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def run_once(self) -> int:
        """One round: the jobs due now, each advanced one step; how many."""
        claimed = await db.run(claim_due, self.owner)
        await asyncio.gather(*(advance(job_id, self.owner) for job_id in claimed))
        return len(claimed)

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = await self.run_once()
            except Exception:
                logger.exception("the job runner's round failed")
                busy = 0
            if not busy:
                await asyncio.sleep(self.interval)

    def stop_soon(self) -> None:
        """Stop after the round in progress."""
        self._stop.set()

    def start(self) -> "Runner":
        """Run in a daemon thread with an event loop of its own."""
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.run()), name="gateway-jobs", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


_runner: Runner | None = None
_runner_lock = threading.Lock()


def start() -> None:
    """Start this serving worker's runner, once, when `GATEWAY_JOB_RUNNER` is on."""
    global _runner
    if not settings.GATEWAY_JOB_RUNNER:
        return
    with _runner_lock:
        if _runner is None:
            _runner = Runner().start()


def stop() -> None:
    """Stop this worker's runner after its round in progress (a worker shutting down)."""
    global _runner
    with _runner_lock:
        runner, _runner = _runner, None
    if runner is not None:
        runner.stop()
