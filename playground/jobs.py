"""The Music and Video pages: a form with every field of the product, and the job centre.

Submitting calls `gateway.jobs.create` as the signed-in member (the same pipeline as
`/v1/audio/music` and `/v1/video/generate`: checked, its worst case held, booked when it
settles), and the new job appears at once as a card in the job centre
(`playground.job_centre`), which the page's websocket keeps up to date; without the
socket each unfinished card asks for itself (`card`). The member's jobs are the
history: `?job=` loads one into the form. Every lookup starts from the workspace and
the member: another member's jobs are 404.
"""

import asyncio

from asgiref.sync import sync_to_async
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, register_converter
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget

from accounts.access import workspace_view
from gateway import job_runner, jobs
from gateway.asgi import new_request_id
from gateway.errors import ApiError
from gateway.models import Job, JobKind
from playground import code, job_centre, media, products, runs
from playground.forms import MusicForm, VideoForm
from playground.models import ERROR_TITLES, ImageRun

TEMPLATE = "playground/jobs.html"
HISTORY_LENGTH = 40
RECENT_JOBS = 12
PICKABLE = 12  # of the member's latest generated images, offered as a first frame
FORMS = {JobKind.MUSIC: MusicForm, JobKind.VIDEO: VideoForm}
INITIAL = {
    JobKind.MUSIC: {"duration_seconds": 30, "instrumental": False},
    JobKind.VIDEO: {"aspect_ratio": "16:9", "duration_seconds": 5, "resolution": "720p"},
}
TITLES = {JobKind.MUSIC: "Music", JobKind.VIDEO: "Video"}


def _mine(request: HttpRequest):
    return job_centre.member_jobs(request.workspace.pk, request.user.pk)


def _get_job(request: HttpRequest, job_id: str, kind: str | None = None) -> Job:
    found = _mine(request).filter(pk=job_id).select_related("file")
    found = found.filter(kind=kind) if kind else found
    job = found.first()
    if job is None:
        raise Http404("No such job.")
    return job


def _my_pictures(request: HttpRequest) -> list[media.Picture]:
    """The member's latest generated images, newest first, to start a video from."""
    file_ids: list[str] = []
    for run in ImageRun.objects.for_member(request.workspace, request.user)[:PICKABLE]:
        file_ids += [i for i in run.file_ids if i not in file_ids]
    found = media.pictures(request, file_ids[:PICKABLE])
    return [found[i] for i in file_ids[:PICKABLE] if i in found]


def _form_context(request: HttpRequest, kind: str, form, **extra) -> dict:
    context = {"kind": kind, "title": TITLES[kind], "form": form}
    if kind == JobKind.VIDEO:
        context |= {"pictures": _my_pictures(request), "accept": media.IMAGE_TYPES}
    return context | extra


def _history(request: HttpRequest, kind: str, current: str | None = None) -> dict:
    history = list(_mine(request).filter(kind=kind)[:HISTORY_LENGTH])
    return {"history": history, "current_id": current}


def _cards(request: HttpRequest, kind: str) -> list[dict]:
    recent = _mine(request).filter(kind=kind).select_related("file")[:RECENT_JOBS]
    return [job_centre.card_context(job, request.workspace.slug) for job in recent]


def _initial(kind: str, job: Job | None) -> dict:
    if job is None:
        return INITIAL[kind]
    return INITIAL[kind] | {
        name: value for name, value in job.params.items() if name in FORMS[kind].base_fields
    }


def _page(request: HttpRequest, kind: str) -> HttpResponse:
    current = _get_job(request, request.GET["job"], kind) if "job" in request.GET else None
    form = FORMS[kind](initial=_initial(kind, current))
    context = _form_context(request, kind, form)
    context |= _history(request, kind, current.pk if current else None)
    context |= {
        "cards": _cards(request, kind),
        "tabs": products.tabs(request, job_centre.PAGES[kind]),
        "job_page": True,
    }
    return render(request, TEMPLATE, context)


@workspace_view("playground.use")
@require_GET
def music(request: HttpRequest) -> HttpResponse:
    return _page(request, JobKind.MUSIC)


@workspace_view("playground.use")
@require_GET
def video(request: HttpRequest) -> HttpResponse:
    return _page(request, JobKind.VIDEO)


def _form_response(request: HttpRequest, kind: str, form, *, status: int, **errors: str):
    """The form again, with what went wrong beside it, in place of the one sent."""
    response = render(
        request, TEMPLATE + "#form", _form_context(request, kind, form, **errors), status=status
    )
    return reswap(retarget(response, "#job-form"), "outerHTML")


async def _first_frame(request: HttpRequest) -> tuple[str | None, str]:
    """The video's first frame, as a file id: an upload (kept for the workspace), one of
    the member's images, or none."""
    upload = request.FILES.get("upload")
    if upload is not None:
        try:
            return (await media.upload(request, upload)).file_id, ""
        except ApiError as exc:
            return None, exc.detail
    token = request.POST.get("image", "")
    if not token:
        return None, ""
    file_id = media.file_id_of(request, token)
    found = await sync_to_async(media.pictures)(request, [file_id] if file_id else [])
    if file_id not in found:
        return None, "That image is not one of yours any more; pick another."
    return file_id, ""


def _explain(exc: ApiError) -> str:
    title = ERROR_TITLES.get(exc.status, "The call failed")
    return f"{title} ({exc.status}): {exc.detail}"


async def _start(request: HttpRequest, kind: str) -> HttpResponse:
    form = FORMS[kind](request.POST)
    respond = sync_to_async(_form_response)
    if not form.is_valid():
        return await respond(request, kind, form, status=400)
    if kind == JobKind.VIDEO:
        first_frame, frame_error = await _first_frame(request)
        if frame_error:
            return await respond(request, kind, form, status=400, frame_error=frame_error)
        body = form.body(first_frame)
    else:
        first_frame, body = None, form.body()
    try:
        answer = await jobs.create(
            media.caller_of(request), body, kind=kind, request_id=new_request_id(), request=request
        )
    except ApiError as exc:
        # The form stays as it was sent; the call's own status is in the message.
        return await respond(request, kind, form, status=200, form_error=_explain(exc))
    if first_frame:
        # The card shows the frame the video started from as its poster.
        job = await Job.objects.aget(pk=answer["id"])
        job.params["first_frame_file"] = first_frame
        await Job.objects.filter(pk=job.pk).aupdate(params=job.params)
    await request.session.aset(job_centre.SESSION_FLAG, True)
    return await sync_to_async(_started_response)(request, kind, answer["id"])


def _started_response(request: HttpRequest, kind: str, job_id: str) -> HttpResponse:
    job = _get_job(request, job_id, kind)
    # The form again as it was sent (without the errors of an earlier try), and the history.
    form = FORMS[kind](initial=_initial(kind, job))
    context = _form_context(request, kind, form) | _history(request, kind)
    context |= {"card": job_centre.card_context(job, request.workspace.slug)}
    return render(request, TEMPLATE + "#started", context)


@workspace_view("playground.use")
@require_POST
async def music_start(request: HttpRequest) -> HttpResponse:
    return await _start(request, JobKind.MUSIC)


@workspace_view("playground.use")
@require_POST
async def video_start(request: HttpRequest) -> HttpResponse:
    return await _start(request, JobKind.VIDEO)


@workspace_view("playground.use")
@require_GET
async def card(request: HttpRequest, job_id: str) -> HttpResponse:
    """One job's card as it is now, moved on first when it is unfinished (the page's
    fallback when its websocket is closed)."""
    job = await sync_to_async(_get_job)(request, job_id)
    if job.settled_at is None and job.upstream_id:
        await asyncio.shield(job_runner.poll_now(job.pk))  # not left claimed if the page goes
    return await sync_to_async(_card_response)(request, job_id)


def _card_response(request: HttpRequest, job_id: str) -> HttpResponse:
    job = _get_job(request, job_id)
    context = {"card": job_centre.card_context(job, request.workspace.slug)}
    return render(request, job_centre.CARD_TEMPLATE, context)


@workspace_view("playground.use")
@require_POST
async def cancel(request: HttpRequest, job_id: str) -> HttpResponse:
    """Cancel an unfinished job: its hold is released and nothing is charged."""
    job = await sync_to_async(_get_job)(request, job_id)
    try:
        await jobs.cancel(media.caller_of(request), job.pk, kind=job.kind, request=request)
    except ApiError as exc:
        if exc.status != 409:  # 409: it finished meanwhile, and the card shows how
            raise
    return await sync_to_async(_card_response)(request, job_id)


@workspace_view("playground.use")
@require_http_methods(["GET", "POST"])
def view_code(request: HttpRequest, kind: str) -> HttpResponse:
    """A job's exact request as code (`?job=`), or the request the form would send now."""
    if kind not in FORMS:
        raise Http404("No such product.")
    if request.method == "GET":
        job = _get_job(request, request.GET.get("job", ""), kind)
        body = {k: v for k, v in job.params.items() if k in FORMS[kind].base_fields}
        if job.params.get("first_frame_file"):
            body["first_frame"] = job.params["first_frame_file"]
    else:
        form = FORMS[kind](request.POST)
        if not form.is_valid():
            message = runs.form_errors(form)
            return render(request, TEMPLATE + "#code", {"code_error": message, "kind": kind})
        if kind == JobKind.VIDEO:
            token = request.POST.get("image", "")
            body = form.body(media.file_id_of(request, token) if token else None)
        else:
            body = form.body()
    base_url = request.build_absolute_uri("/v1").rstrip("/")
    context = {"snippets": code.job_snippets(kind, body, base_url), "kind": kind}
    return render(request, TEMPLATE + "#code", context)


class _Kind:
    """`music` or `video` in a URL, so that other pages' `code/` under the playground stay theirs."""

    regex = "music|video"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(_Kind, "jobkind")

urlpatterns = [
    path("music/", music, name="playground_music"),
    path("music/start/", music_start, name="playground_music_start"),
    path("video/", video, name="playground_video"),
    path("video/start/", video_start, name="playground_video_start"),
    path("<jobkind:kind>/code/", view_code, name="playground_job_code"),
    path("jobs/<str:job_id>/", card, name="playground_job"),
    path("jobs/<str:job_id>/cancel/", cancel, name="playground_job_cancel"),
]
