"""Images: `POST /v1/images/generate` and `POST /v1/images/edit` (seed 002), OpenAI's
`POST /v1/images/generations` (what the SDKs' `images.generate` calls) and seed 003's
`POST /v1/image` shortcut, all through `generate()`.

Each image is held and charged at the price of its quality and size (the variant
"quality/size", see console.pricing), times the number asked for; a call the upstream
refuses costs nothing. Images given to the call (`reference_images`, `image`) are data:
URIs, file ids or links to this workspace's files (gateway.media), so the upstream never
fetches anything for a caller. Every result is copied into the console's storage and
handed out as the console's own signed link (or as base64 when asked), with its file id.
"""

import asyncio
import base64
import binascii
import time
from typing import Literal

from django.http import HttpRequest, HttpResponse, JsonResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway import media, pipeline
from gateway.errors import ApiError
from gateway.http import MODEL_CALL_ERRORS, Operation, endpoint, json_body, validate
from gateway.models import Purpose
from upstream.errors import UpstreamError
from upstream.fleet import UpstreamResponse, get_fleet

GENERATE_PATH = "/v1/images/generate"
EDIT_PATH = "/v1/images/edit"
OPENAI_PATH = "/v1/images/generations"
SHORTCUT_PATH = "/v1/image"
MAX_PROMPT = 32_000
MAX_IMAGES = 4
DEFAULT_SIZE = "1024x1024"
# A small red PNG, for the examples of the OpenAPI document.
EXAMPLE_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFUlEQVR42mO8o6HBgA0w"
    "MeAAg1MCAO/EATxlNiNaAAAAAElFTkSuQmCC"
)


class ImageRequest(BaseModel):
    """The fields the gateway takes; others (OpenAI's `style`, `user`, ...) are not sent on."""

    model_config = ConfigDict(extra="ignore", strict=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)
    model: str | None = Field(default=None, min_length=1, max_length=128)
    size: Literal["1024x1024", "1024x1536", "1536x1024", "auto"] = DEFAULT_SIZE
    quality: Literal["low", "medium", "high", "auto"] = "auto"
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    response_format: Literal["url", "b64_json"] = "url"
    reference_images: list[str] | None = Field(
        default=None,
        max_length=4,
        description="Data: URIs, file ids (file_...) or links to this workspace's files.",
    )


class ImageEditRequest(ImageRequest):
    image: str = Field(
        min_length=1,
        description="The image to edit: a data: URI, a file id or a link to this workspace's file.",
    )


def variant(quality: str, size: str) -> str:
    """The price variant of one image: "quality/size" (see console.pricing)."""
    return f"{quality}/{size}"


async def _inputs(caller: pipeline.Caller, spec: ImageRequest) -> dict:
    """The images given to the call, as the data: URIs sent upstream (400/404 otherwise)."""
    found: dict = {}
    if spec.reference_images:
        found["reference_images"] = [
            await media.image_input(caller.workspace_id, value, f"reference_images[{index}]")
            for index, value in enumerate(spec.reference_images)
        ]
    if isinstance(spec, ImageEditRequest):
        found["image"] = await media.image_input(caller.workspace_id, spec.image, "image")
    return found


async def _result(call: pipeline.Call, item: object, index: int) -> tuple[bytes, str | None]:
    """One result image: its bytes, and its base64 text when the node sent that (from
    `b64_json` or a data: URI; else the bytes come from the node's link)."""
    if not isinstance(item, dict):
        raise _bad_answer(call, f"result {index} is not an object")
    url = item.get("url")
    text = item.get("b64_json")
    if not isinstance(text, str) and isinstance(url, str) and url.startswith("data:"):
        text = url.partition(",")[2]
    if isinstance(text, str):
        try:
            return base64.b64decode(text, validate=True), text
        except (binascii.Error, ValueError):
            raise _bad_answer(call, f"result {index} holds invalid base64") from None
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        try:
            return (await get_fleet().download(url, node=call.node)).content, None
        except UpstreamError as exc:
            error = call.failed(exc)
            call.units = {}  # no image reached the caller
            raise error from None
    raise _bad_answer(call, f"result {index} has neither b64_json nor url")


def _bad_answer(call: pipeline.Call, why: str) -> ApiError:
    """An answer the console cannot hand on: the call fails, and costs nothing."""
    call.status, call.error, call.units = 502, f"Unusable upstream image answer: {why}", {}
    return ApiError(502, f"The upstream's answer could not be used: {why}.", code="upstream_error")


async def _keep_results(
    call: pipeline.Call, response: UpstreamResponse, spec: ImageRequest, base: str
) -> dict:
    """The answer for the caller: each result kept in storage, as a signed link or base64."""
    try:
        answer = response.json()
    except ValueError:
        raise _bad_answer(call, "not JSON") from None
    items = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(items, list) or not items:
        raise _bad_answer(call, "no images")
    results = [await _result(call, item, index) for index, item in enumerate(items[: spec.n])]
    kinds = [media.sniff(content) for content, _ in results]
    for index, kind in enumerate(kinds):
        if kind not in media.IMAGE_TYPES:
            raise _bad_answer(call, f"result {index} is not a PNG, JPEG, GIF or WebP image")
    files = await asyncio.gather(
        *(
            media.keep(
                workspace_id=call.caller.workspace_id,
                data=content,
                content_type=kind,
                purpose=Purpose.IMAGE,
                request_id=call.request_id,
            )
            for (content, _), kind in zip(results, kinds, strict=True)
        )
    )
    data = []
    for item, (content, text), file in zip(items, results, files, strict=False):
        kept: dict = {"file_id": file.id}
        if spec.response_format == "b64_json":
            kept["b64_json"] = text or base64.b64encode(content).decode()
        else:
            kept["url"] = media.signed_url(file, base)
        if isinstance(item.get("revised_prompt"), str):
            kept["revised_prompt"] = item["revised_prompt"]
        data.append(kept)
    created = answer.get("created")
    return {"created": created if isinstance(created, int) else int(time.time()), "data": data}


async def generate(
    caller: pipeline.Caller,
    body: dict,
    *,
    request_id: str,
    request: HttpRequest | None = None,
    edit: bool = False,
    endpoint: str = "",
) -> tuple[dict, pipeline.Call]:
    """Generate (or, with `edit`, edit) images for `body`: checked, held at the price of
    its images, forwarded, each result kept; (the answer, the booked call)."""
    spec = validate(ImageEditRequest if edit else ImageRequest, body)
    # The key's scope first: a key that may not make images learns nothing of the files.
    pipeline.authorize(caller, scope="images", model=spec.model)
    inputs = await _inputs(caller, spec)
    size = DEFAULT_SIZE if spec.size == "auto" else spec.size
    upstream_body = {
        "prompt": spec.prompt,
        "size": size,
        "quality": spec.quality,
        "n": spec.n,
        # The bytes in the answer itself: nothing to fetch before keeping them.
        "response_format": "b64_json",
        **inputs,
    }
    if spec.model:
        upstream_body["model"] = spec.model
    path = EDIT_PATH if edit else GENERATE_PATH
    call = await pipeline.start(
        caller, request_id=request_id, product="images", endpoint=endpoint or path,
        model=spec.model or "", request=request, units={"image": spec.n},
        variant=variant(spec.quality, size),
    )  # fmt: skip
    async with call:
        response = await call.forward(path, upstream_body)
        answer = await _keep_results(call, response, spec, media.base_url(request))
        call.units = {"image": len(answer["data"])}
    return answer, call


async def _answer(request: HttpRequest, *, edit: bool = False) -> HttpResponse:
    answer, _ = await generate(
        request.caller, json_body(request, media=True), request_id=request.request_id,
        request=request, edit=edit, endpoint=request.path,
    )  # fmt: skip
    return JsonResponse(answer)


@endpoint("POST")
async def images_generate(request: HttpRequest) -> HttpResponse:
    return await _answer(request)


@endpoint("POST")
async def images_edit(request: HttpRequest) -> HttpResponse:
    return await _answer(request, edit=True)


SCHEMAS = {
    "ImageList": {
        "type": "object",
        "properties": {
            "created": {"type": "integer"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "url": {"type": "string"},
                        "b64_json": {"type": "string"},
                        "revised_prompt": {"type": "string"},
                        "file_id": {"type": "string"},
                    },
                    "required": ["file_id"],
                },
            },
        },
        "required": ["created", "data"],
    },
}

_EXAMPLE = {"prompt": "A lighthouse at dusk", "size": "1024x1024", "quality": "low"}

OPERATIONS = [
    Operation(
        GENERATE_PATH, "post", "Generate images (priced per image by quality and size)",
        MODEL_CALL_ERRORS, "ImageList", request=ImageRequest, example=_EXAMPLE,
        view=images_generate, name="images_generate",
    ),
    Operation(
        OPENAI_PATH, "post", "Generate images (OpenAI-compatible path)",
        MODEL_CALL_ERRORS, "ImageList", request=ImageRequest, example=_EXAMPLE,
        view=images_generate, name="images_generations",
    ),
    Operation(
        EDIT_PATH, "post", "Edit an image, with optional references",
        MODEL_CALL_ERRORS, "ImageList", request=ImageEditRequest,
        example=_EXAMPLE | {"prompt": "Make it night", "image": EXAMPLE_PNG},
        view=images_edit, name="images_edit",
    ),
    Operation(
        SHORTCUT_PATH, "post", "Generate one image from a prompt (1024x1024, quality auto)",
        MODEL_CALL_ERRORS, "ImageList", request=ImageRequest,
        example={"prompt": "A futuristic cyberpunk city"},
        view=images_generate, name="image",
    ),
]  # fmt: skip
