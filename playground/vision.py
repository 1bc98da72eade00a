"""The Vision page: an image (uploaded, or one the member generated), a target to find in it,
and the box (or grid cells) the model answers, drawn over the image beside its JSON and cost.

The call is `gateway.vision.locate` as the signed-in member, the same pipeline as
`/v1/vision/locate`. Every lookup starts from the workspace and the member.
"""

import json
import re
import time

from asgiref.sync import sync_to_async
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from accounts.access import workspace_view
from gateway import vision
from gateway.asgi import new_request_id
from gateway.errors import ApiError
from playground import code, media, products
from playground.forms import VisionForm
from playground.models import ERROR_TITLES, ImageRun

TEMPLATE = "playground/vision.html"
PICKABLE = 12  # of the member's latest generated images
NO_IMAGE = "Upload an image or pick one of yours."


def _my_pictures(request: HttpRequest) -> list[media.Picture]:
    """The member's latest generated images, newest first, to pick from."""
    file_ids: list[str] = []
    for run in ImageRun.objects.for_member(request.workspace, request.user)[:PICKABLE]:
        file_ids += [i for i in run.file_ids if i not in file_ids]
    found = media.pictures(request, file_ids[:PICKABLE])
    return [found[i] for i in file_ids[:PICKABLE] if i in found]


def _form_context(
    request: HttpRequest, form: VisionForm, chosen: media.Picture | None = None, **extra
) -> dict:
    """The form's context; `chosen` is the image just looked in, offered (and picked) first."""
    pictures = _my_pictures(request)
    if chosen is not None:
        pictures = [chosen] + [p for p in pictures if p.file_id != chosen.file_id]
    context = {"form": form, "pictures": pictures, "chosen": chosen, "accept": media.IMAGE_TYPES}
    return context | extra


@workspace_view("playground.use")
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    """The form; `?image=` (a reference from the Images page) comes picked."""
    chosen = None
    if "image" in request.GET:
        file_id = media.file_id_of(request, request.GET["image"]) or ""
        chosen = media.pictures(request, [file_id]).get(file_id)
        if chosen is None:
            raise Http404("No such image.")
    form = VisionForm(initial={"mode": "bbox"})
    tabs = products.tabs(request, "playground_vision")
    return render(request, TEMPLATE, _form_context(request, form, chosen, tabs=tabs))


def _form_response(request: HttpRequest, form: VisionForm, **errors: str) -> HttpResponse:
    status = 200 if errors.get("form_error") else 400
    context = _form_context(request, form, **errors)
    response = render(request, TEMPLATE + "#form", context, status=status)
    return reswap(retarget(response, "#vis-form"), "outerHTML")


async def _picture(request: HttpRequest) -> tuple[media.Picture | None, str]:
    """The image to look in: an upload (kept for the workspace) or one of the member's."""
    upload = request.FILES.get("upload")
    if upload is not None:
        try:
            return await media.upload(request, upload), ""
        except ApiError as exc:
            return None, exc.detail
    token = request.POST.get("image", "")
    if not token:
        return None, NO_IMAGE
    file_id = media.file_id_of(request, token)
    found = await sync_to_async(media.pictures)(request, [file_id] if file_id else [])
    if file_id not in found:
        return None, "That image is not one of yours any more; pick another."
    return found[file_id], ""


@workspace_view("playground.use")
@require_POST
async def locate(request: HttpRequest) -> HttpResponse:
    form = VisionForm(request.POST)
    respond = sync_to_async(_form_response)
    if not form.is_valid():
        missing = "upload" not in request.FILES and not request.POST.get("image")
        return await respond(request, form, image_error=NO_IMAGE if missing else "")
    picture, image_error = await _picture(request)
    if picture is None:
        return await respond(request, form, image_error=image_error)
    body = {"image": picture.file_id, "target": form.cleaned_data["target"]}
    body["mode"] = form.cleaned_data["mode"]
    started = time.monotonic()
    try:
        answer, call = await vision.locate(
            media.caller_of(request), body, request_id=new_request_id(), request=request
        )
    except ApiError as exc:
        title = ERROR_TITLES.get(exc.status, "The call failed")
        return await respond(request, form, form_error=f"{title} ({exc.status}): {exc.detail}")
    duration_ms = int((time.monotonic() - started) * 1000)
    cost = await call.charged()
    context = {
        "picture": picture,
        "answer": answer,
        "answer_json": readable_json(answer),
        "request_json": json.dumps(body),
        "shapes": shapes(answer),
        "cost": cost,
        "duration_ms": duration_ms,
    }
    # The form again without the errors of an earlier try, the image just used picked.
    form = VisionForm(initial=form.cleaned_data)
    context |= await sync_to_async(_form_context)(request, form, picture)
    return await sync_to_async(render)(request, TEMPLATE + "#result-and-form", context)


def readable_json(answer: dict) -> str:
    """The answer, indented, with short lists of numbers (grid cells) kept on one line."""
    text = json.dumps(answer, indent=2)
    return re.sub(
        r"\[\s*(-?[\d.]+(?:,\s*-?[\d.]+)*)\s*\]",
        lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
        text,
    )


def _unit(value: float) -> str:
    return f"{min(1.0, max(0.0, float(value))):.4f}"


def shapes(answer: dict) -> dict:
    """What to draw over the image, in its own units (0..1 both ways): a box, or grid cells
    with the lines between them."""
    box = answer.get("bbox")
    if answer.get("found") and isinstance(box, dict):
        fields = ("x", "y", "width", "height")
        return {"box": {name: _unit(box.get(name, 0)) for name in fields}}
    if "cells" in answer:
        grid = answer.get("grid") or {}
        rows, cols = int(grid.get("rows") or 3), int(grid.get("cols") or 3)
        cells = [
            {"x": _unit(c / cols), "y": _unit(r / rows), "width": _unit(1 / cols),
             "height": _unit(1 / rows)}
            for r, c in answer["cells"]
        ]  # fmt: skip
        lines = [_unit(i / rows) for i in range(1, rows)], [_unit(i / cols) for i in range(1, cols)]
        return {"cells": cells, "row_lines": lines[0], "col_lines": lines[1]}
    return {}


@workspace_view("playground.use")
@require_POST
def view_code(request: HttpRequest) -> HttpResponse:
    """A located request (sent back by its result) as code."""
    try:
        body = json.loads(request.POST.get("request", ""))
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return render(request, TEMPLATE + "#code", {"code_error": "The page sent no request."})
    base_url = request.build_absolute_uri("/v1").rstrip("/")
    return render(request, TEMPLATE + "#code", {"snippets": code.vision_snippets(body, base_url)})


urlpatterns = [
    path("", page, name="playground_vision"),
    path("locate/", locate, name="playground_vision_locate"),
    path("code/", view_code, name="playground_vision_code"),
]
