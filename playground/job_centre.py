"""The job centre: the member's music and video jobs as cards, kept up to date over a websocket.

A card shows a job's status, progress, elapsed time and cost (what is held while it runs,
what it cost once settled); a finished one plays its result. The Music and Video pages
list them, and any console page of a member with an unfinished job opens the same
socket to say when one finishes.

The socket (`/ws/jobs/<slug>/`) serves one member in one workspace, like the chat
playground's: anonymous is closed with 4401, a member without the playground with 4403,
and it closes the same way when the session signs out or the membership changes
(`playground.sockets`). While the member has unfinished jobs it moves them on every
`TICK` seconds (`gateway.job_runner.poll_now`: a job a runner holds is left to it, so
nothing is polled twice), and each change it sees goes through the channel layer to
the member's group, so that every page the member has open in the workspace hears it
once. Every query starts from the workspace and the member.
"""

import asyncio
import logging
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership
from gateway import job_runner, media
from gateway.models import Job, JobKind, JobStatus, StoredFile
from playground import sockets

logger = logging.getLogger(__name__)

CARD_TEMPLATE = "playground/job_card.html"
TICK = 1.0  # seconds between two looks at the member's unfinished jobs
SESSION_FLAG = "playground_jobs"  # set once the member starts a job in this session
MAX_WATCHED = 20
PAGES = {JobKind.MUSIC: "playground_music", JobKind.VIDEO: "playground_video"}


def jobs_group(*, user_id: int, workspace_id: int) -> str:
    return f"playground.jobs.{user_id}.{workspace_id}"


def member_jobs(workspace_id: int, user_id: int):
    """The jobs this member started from the console in this workspace, newest first."""
    return Job.objects.for_workspace(workspace_id).filter(user_id=user_id, source="playground")


def card_context(job: Job, slug: str) -> dict:
    """What a card shows of a job."""
    finished = job.settled_at is not None
    file = job.file if job.status == JobStatus.SUCCEEDED else None
    elapsed = ((job.settled_at or timezone.now()) - job.created_at).total_seconds()
    poster_id = job.params.get("first_frame_file")
    return {
        "job": job,
        "slug": slug,
        "finished": finished,
        "prompt": job.params.get("prompt", ""),
        "result_url": media.signed_path(file) if file is not None else "",
        "download_name": f"{job.id}.{(file.content_type.split('/')[-1] if file else '')}",
        "poster_url": _poster(job, poster_id) if poster_id else "",
        "lyrics": job.result.get("lyrics") or job.params.get("lyrics") or "",
        "elapsed": int(elapsed),
        "started_ms": int(job.created_at.timestamp() * 1000),
        "page_url": reverse(PAGES[job.kind], kwargs={"slug": slug}) + f"?job={job.id}",
    }


def _poster(job: Job, file_id: str) -> str:
    file = StoredFile.objects.for_workspace(job.workspace_id).filter(pk=file_id).first()
    return media.signed_path(file) if file is not None else ""


def watch(request: HttpRequest) -> dict:
    """A context processor: the member's unfinished jobs, for the page to watch them.

    Nothing is looked up until the member has started a job in this session, and the
    flag is dropped once none is left unfinished, so that the console's other pages cost
    nothing extra (no query, no socket) for a member who has no job running.
    """
    workspace = getattr(request, "workspace", None)
    if workspace is None or not request.session.get(SESSION_FLAG):
        return {}
    unfinished = list(
        member_jobs(workspace.pk, request.user.pk)
        .unsettled()
        .values_list("pk", flat=True)[:MAX_WATCHED]
    )
    if not unfinished:
        del request.session[SESSION_FLAG]
        return {}
    return {"job_watch": ",".join(unfinished)}


class JobsConsumer(AsyncJsonWebsocketConsumer):
    """One page's view of its member's jobs: `job` messages `{id, kind, status, finished,
    html, prompt, url}` as they change. It only speaks; the page says nothing to it."""

    async def connect(self) -> None:
        self.open = False
        self.joined: list[str] = []
        self.seen: dict[str, tuple] = {}
        self.ticker: asyncio.Task | None = None
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=sockets.SIGNED_OUT)
            return
        slug = self.scope["url_route"]["kwargs"]["slug"]
        membership = (
            await Membership.objects.select_related("workspace")
            .filter(user=user, workspace__slug=slug)
            .afirst()
        )
        if membership is None or not membership.can("playground.use"):
            await self.close(code=sockets.NOT_ALLOWED)
            return
        self.user_id = user.pk
        self.workspace = membership.workspace
        # Jobs the page saw unfinished: they are reported even if they end before this.
        asked = parse_qs(self.scope.get("query_string", b"").decode()).get("watch", [""])[0]
        self.watching = {i for i in asked.split(",") if i.startswith(("music_", "video_"))}
        self.watching = set(sorted(self.watching)[:MAX_WATCHED])
        for group in (
            sockets.session_group(self.scope["session"].session_key),
            sockets.member_group(user_id=user.pk, workspace_id=self.workspace.pk),
            jobs_group(user_id=user.pk, workspace_id=self.workspace.pk),
        ):
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)
        self.open = True
        await self.accept()
        self.ticker = asyncio.create_task(self._tick())

    async def disconnect(self, code: int) -> None:
        self.open = False
        if self.ticker is not None:
            self.ticker.cancel()
            await asyncio.gather(self.ticker, return_exceptions=True)
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        pass  # the page only listens

    async def playground_close(self, event: dict) -> None:
        if self.open:
            self.open = False
            await self.close(code=event["code"])

    async def _tick(self) -> None:
        while self.open:
            try:
                await self._look()
            except Exception:
                logger.exception("could not look at the member's jobs")
            await asyncio.sleep(TICK)

    def _unfinished(self) -> list[str]:
        jobs = member_jobs(self.workspace.pk, self.user_id).unsettled()
        return list(jobs.values_list("pk", flat=True)[:MAX_WATCHED])

    def _messages(self, job_ids: set[str]) -> list[dict]:
        jobs = member_jobs(self.workspace.pk, self.user_id).filter(pk__in=job_ids)
        messages = []
        for job in jobs.select_related("file"):
            state = (job.status, job.progress, job.settled_at is not None)
            if self.seen.get(job.id) == state:
                continue
            card = card_context(job, self.workspace.slug)
            messages.append(
                {
                    "type": "jobs.update",
                    "id": job.id,
                    "kind": job.kind,
                    "status": job.status,
                    "state": list(state),
                    "finished": state[2],
                    "prompt": card["prompt"][:80],
                    "url": card["page_url"],
                    "html": render_to_string(CARD_TEMPLATE, {"card": card}),
                }
            )
        return messages

    async def _look(self) -> None:
        """Move the member's unfinished jobs on, and tell the member's pages what changed."""
        unfinished = await sync_to_async(self._unfinished)()
        for job_id in unfinished:
            # Shielded: a page closed mid-poll must not leave the job claimed until the
            # claim expires, with every other page of the member waiting on it.
            await asyncio.shield(job_runner.poll_now(job_id))
        watched = set(unfinished) | self.watching
        if not watched:
            return
        group = jobs_group(user_id=self.user_id, workspace_id=self.workspace.pk)
        for message in await sync_to_async(self._messages)(watched):
            await self.channel_layer.group_send(group, message)
        self.watching = {i for i in watched if self.seen.get(i, (None, None, False))[2] is False}

    async def jobs_update(self, event: dict) -> None:
        state = tuple(event["state"])
        if not self.open or self.seen.get(event["id"]) == state:
            return
        self.seen[event["id"]] = state
        await self.send_json(
            {k: v for k, v in event.items() if k not in ("type", "state")} | {"type": "job"}
        )
