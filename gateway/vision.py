"""`POST /v1/vision/locate`: where in an image a described target is.

The answer is the upstream's: `{"found", "bbox": {"x", "y", "width", "height"},
"confidence"}` with the box normalised to 0..1 of the image's width and height, or in
grid mode (`"mode": "grid"`, `"grid": {"rows", "cols"}`) the `cells` ([row, col], from
0) that the target covers. The image is a data: URI, a file id or a link to a file this
workspace stored (gateway.media); each call is charged the vision price of one image.
"""

from typing import Literal

from django.http import HttpRequest, HttpResponse, JsonResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway import media, pipeline
from gateway.errors import ApiError
from gateway.http import MODEL_CALL_ERRORS, Operation, endpoint, json_body, validate
from gateway.images import EXAMPLE_PNG

PATH = "/v1/vision/locate"


class Grid(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    rows: int = Field(default=3, ge=1, le=20)
    cols: int = Field(default=3, ge=1, le=20)


class LocateRequest(BaseModel):
    """`image` (or `image_url`) and `target` (or `query`) are required."""

    model_config = ConfigDict(extra="ignore", strict=True)

    image: str | None = Field(
        default=None,
        min_length=1,
        description="A data: URI, a file id (file_...) or a link to this workspace's file.",
    )
    image_url: str | None = Field(default=None, min_length=1, description="Same as `image`.")
    target: str | None = Field(
        default=None, min_length=1, max_length=1000, description="What to find, e.g. 'red car'."
    )
    query: str | None = Field(default=None, min_length=1, max_length=1000)
    mode: Literal["bbox", "grid"] = "bbox"
    grid: Grid | None = None


def _one_of(spec: LocateRequest, *names: str) -> str:
    for name in names:
        value = getattr(spec, name)
        if value is not None:
            return value
    raise ApiError(400, f"The '{names[0]}' field is required.", code="invalid_request")


async def locate(
    caller: pipeline.Caller, body: dict, *, request_id: str, request: HttpRequest | None = None
) -> tuple[dict, pipeline.Call]:
    """Locate `body`'s target in its image, charged one vision image; (the answer, the call)."""
    spec = validate(LocateRequest, body)
    image = _one_of(spec, "image", "image_url")
    target = _one_of(spec, "target", "query")
    # The key's scope first: a key that may not use vision learns nothing of the files.
    pipeline.authorize(caller, scope="vision")
    field = "image" if spec.image is not None else "image_url"
    upstream_body: dict = {
        "image": await media.image_input(caller.workspace_id, image, field),
        "target": target,
        "mode": spec.mode,
    }
    if spec.mode == "grid":
        grid = spec.grid or Grid()
        upstream_body["grid"] = {"rows": grid.rows, "cols": grid.cols}
    call = await pipeline.start(
        caller, request_id=request_id, product="vision", endpoint=PATH, request=request,
        units={"image": 1},
    )  # fmt: skip
    async with call:
        response = await call.forward(PATH, upstream_body)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            call.status, call.error, call.units = 502, "Unusable upstream vision answer", {}
            raise ApiError(502, "The upstream's answer could not be used.", code="upstream_error")
    return answer, call


@endpoint("POST")
async def locate_view(request: HttpRequest) -> HttpResponse:
    answer, _ = await locate(
        request.caller, json_body(request, media=True), request_id=request.request_id,
        request=request,
    )  # fmt: skip
    return JsonResponse(answer)


_BOX = {
    "type": ["object", "null"],
    "properties": {
        "x": {"type": "number"},
        "y": {"type": "number"},
        "width": {"type": "number"},
        "height": {"type": "number"},
    },
    "required": ["x", "y", "width", "height"],
}

SCHEMAS = {
    "Location": {
        "type": "object",
        "properties": {
            "found": {"type": "boolean"},
            "bbox": _BOX,
            "confidence": {"type": "number"},
            "target": {"type": "string"},
            "grid": {"type": "object"},
            "cells": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "required": ["found"],
    },
}

OPERATIONS = [
    Operation(
        PATH, "post", "Locate a described target in an image: a normalised box or grid cells",
        MODEL_CALL_ERRORS, "Location", request=LocateRequest,
        example={"image": EXAMPLE_PNG, "target": "red square"},
        view=locate_view, name="vision_locate",
    ),
]  # fmt: skip
