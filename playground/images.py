"""The Images page: a prompt, a size, a quality, a count and up to four reference pictures.

Submitting calls `gateway.images.generate` as the signed-in member (the same pipeline as
`/v1/images/generations`); the run is kept with its exact request and the files that
came back, so that it reopens into the form and shows again as code. Every lookup
starts from the workspace and the member: another member's runs are 404.
"""

import time

from asgiref.sync import sync_to_async
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from accounts.access import workspace_view
from gateway import images
from gateway.asgi import new_request_id
from gateway.errors import ApiError
from playground import code, media, products, runs
from playground.forms import MAX_REFERENCES, ImageForm
from playground.models import ERROR_TITLES, ImageRun

TEMPLATE = "playground/images.html"
HISTORY_LENGTH = 40
RECENT_RUNS = 3


def _number(value: object) -> int:
    if not str(value).isdigit():
        raise Http404("No such run.")
    return int(str(value))


def _get_run_for_member(request: HttpRequest, pk: object) -> ImageRun:
    run = ImageRun.objects.for_member(request.workspace, request.user).filter(pk=_number(pk))
    found = run.first()
    if found is None:
        raise Http404("No such run.")
    return found


def _cards(request: HttpRequest, runs: list[ImageRun]) -> list[dict]:
    """Runs as the results grid shows them, each picture with a fresh link."""
    links = media.pictures(request, [i for run in runs for i in run.file_ids])
    cards = []
    for run in runs:
        tiles = []
        for index, result in enumerate(run.results):
            picture = links.get(result.get("file_id", ""))
            tiles.append(
                {"index": index, "picture": picture, "revised_prompt": result.get("revised_prompt")}
            )
        cards.append({"run": run, "tiles": tiles})
    return cards


def _history(request: HttpRequest, current: ImageRun | None = None) -> dict:
    runs = list(ImageRun.objects.for_member(request.workspace, request.user)[:HISTORY_LENGTH])
    thumbs = media.pictures(request, [run.file_ids[0] for run in runs if run.file_ids])
    history = [
        {"run": run, "thumb": thumbs.get(run.file_ids[0]) if run.file_ids else None} for run in runs
    ]
    return {"history": history, "current_id": current.pk if current else None}


def _references(request: HttpRequest, file_ids: list[str]) -> list[media.Picture]:
    found = media.pictures(request, file_ids)
    return [found[i] for i in file_ids if i in found]


def _form_context(request: HttpRequest, form: ImageForm, file_ids: list[str], **extra) -> dict:
    """The form's context: its fields and the chips of its reference pictures."""
    return {
        "form": form,
        "references": _references(request, file_ids),
        "max_references": MAX_REFERENCES,
        "accept": media.IMAGE_TYPES,
    } | extra


def _page_context(request: HttpRequest, form: ImageForm, current: ImageRun | None) -> dict:
    if current is not None:
        runs = [current]
    else:
        runs = list(ImageRun.objects.for_member(request.workspace, request.user)[:RECENT_RUNS])
    context = _form_context(request, form, _run_references(current))
    context |= {"cards": _cards(request, runs), "tabs": products.tabs(request, "playground_images")}
    return context | _history(request, current)


def _run_references(run: ImageRun | None) -> list[str]:
    return list(run.request.get("reference_images") or []) if run else []


def _initial(run: ImageRun | None) -> dict:
    if run is None:
        return {"size": "1024x1024", "quality": "auto", "n": 1}
    fields = ("prompt", "size", "quality", "n")
    return {name: run.request[name] for name in fields if name in run.request}


@workspace_view("playground.use")
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    current = _get_run_for_member(request, request.GET["run"]) if "run" in request.GET else None
    form = ImageForm(initial=_initial(current))
    return render(request, TEMPLATE, _page_context(request, form, current))


@workspace_view("playground.use")
@require_POST
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Forget one of the member's runs (its pictures stay the workspace's files until purged)."""
    run = _get_run_for_member(request, pk)
    was_open = request.POST.get("open") == str(run.pk)
    run.delete()
    if was_open:
        return HttpResponseClientRedirect(
            reverse("playground_images", args=[request.workspace.slug])
        )
    return render(request, TEMPLATE + "#history", _history(request))


def _referenced(request: HttpRequest) -> tuple[list[str], str]:
    """The file ids of the form's references, or why they cannot be sent."""
    file_ids = []
    for token in request.POST.getlist("reference"):
        file_id = media.file_id_of(request, token)
        if file_id is None:
            return [], "A reference image is not one of yours; remove it and add it again."
        if file_id not in file_ids:
            file_ids.append(file_id)
    if len(file_ids) > MAX_REFERENCES:
        return [], f"Use at most {MAX_REFERENCES} reference images."
    return file_ids, ""


def _form_response(
    request: HttpRequest, form: ImageForm, file_ids: list[str], *, error: str, status: int
) -> HttpResponse:
    """The form again, with what went wrong beside it, in place of the one sent."""
    context = _form_context(request, form, file_ids, form_error=error)
    response = render(request, TEMPLATE + "#form", context, status=status)
    return reswap(retarget(response, "#img-form"), "outerHTML")


@workspace_view("playground.use")
@require_POST
async def generate(request: HttpRequest) -> HttpResponse:
    form = ImageForm(request.POST)
    file_ids, reference_error = _referenced(request)
    respond = sync_to_async(_form_response)
    if not form.is_valid() or reference_error:
        return await respond(request, form, file_ids, error=reference_error, status=400)
    body = form.body(file_ids)
    request_id = new_request_id()
    started = time.monotonic()
    try:
        answer, call = await images.generate(
            media.caller_of(request), body, request_id=request_id, request=request
        )
    except ApiError as exc:
        # The form stays as it was sent; the call's own status is in the message.
        return await respond(request, form, file_ids, error=_explain(exc), status=200)
    duration_ms = int((time.monotonic() - started) * 1000)
    cost = await call.charged()
    run = await ImageRun.objects.acreate(
        workspace=request.workspace,
        user=request.user,
        request=body,
        results=[
            {"file_id": item.get("file_id", ""), "revised_prompt": item.get("revised_prompt", "")}
            for item in answer.get("data", [])
        ],
        request_id=request_id,
        cost=cost,
        duration_ms=duration_ms,
    )
    return await sync_to_async(_run_response)(request, run)


def _explain(exc: ApiError) -> str:
    title = ERROR_TITLES.get(exc.status, "The call failed")
    return f"{title} ({exc.status}): {exc.detail}"


def _run_response(request: HttpRequest, run: ImageRun) -> HttpResponse:
    # The form again as it was sent, without the errors of an earlier try.
    form = ImageForm(initial=_initial(run))
    context = _form_context(request, form, _run_references(run), card=_cards(request, [run])[0])
    context |= _history(request, run)
    return render(request, TEMPLATE + "#run-and-history", context)


@workspace_view("playground.use")
@require_POST
async def reference(request: HttpRequest) -> HttpResponse:
    """Reference pictures for the form: uploaded (picked, pasted or dropped), or a picture of
    one of the member's runs; answered as chips that the form appends."""
    have, error = _referenced(request)
    uploads = request.FILES.getlist("upload")
    adding = len(uploads) or 1
    pictures: list[media.Picture] = []
    if not error and len(have) + adding > MAX_REFERENCES:
        error = f"Use at most {MAX_REFERENCES} reference images: remove one first."
    if not error and uploads:
        try:
            pictures = [await media.upload(request, upload) for upload in uploads]
        except ApiError as exc:
            error = exc.detail
    elif not error:
        pictures, error = await sync_to_async(_run_picture)(request)
    return await sync_to_async(_references_response)(request, pictures, error)


def _run_picture(request: HttpRequest) -> tuple[list[media.Picture], str]:
    run = _get_run_for_member(request, request.POST.get("run"))
    index = request.POST.get("index", "")
    if not index.isdigit() or int(index) >= len(run.file_ids):
        raise Http404("No such image in this run.")
    file_id = run.file_ids[int(index)]
    found = media.pictures(request, [file_id])
    if file_id not in found:
        return [], "That image is no longer kept; pick another."
    return [found[file_id]], ""


def _references_response(
    request: HttpRequest, pictures: list[media.Picture], error: str
) -> HttpResponse:
    context = {"references": pictures, "reference_error": error}
    return render(request, TEMPLATE + "#new-references", context)


@workspace_view("playground.use")
@require_http_methods(["GET", "POST"])
def view_code(request: HttpRequest) -> HttpResponse:
    """A run's exact request as code (`?run=`), or the request the form would send now."""
    if request.method == "GET":
        body = _get_run_for_member(request, request.GET.get("run")).request
    else:
        form = ImageForm(request.POST)
        file_ids, error = _referenced(request)
        if not form.is_valid() or error:
            message = error or runs.form_errors(form)
            return render(request, TEMPLATE + "#code", {"code_error": message})
        body = form.body(file_ids)
    base_url = request.build_absolute_uri("/v1").rstrip("/")
    return render(request, TEMPLATE + "#code", {"snippets": code.image_snippets(body, base_url)})


urlpatterns = [
    path("", page, name="playground_images"),
    path("generate/", generate, name="playground_images_generate"),
    path("reference/", reference, name="playground_images_reference"),
    path("code/", view_code, name="playground_images_code"),
    path("runs/<int:pk>/delete/", delete, name="playground_images_delete"),
]
