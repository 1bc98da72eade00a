"""POST /v1/upload (free: a usage record at cost 0) and GET /v1/files/{id}/content."""

import base64
import binascii

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway import media, pipeline
from gateway.errors import ApiError
from gateway.http import ACCOUNT_ERRORS, Operation, endpoint, json_body, validate
from gateway.models import Purpose

UPLOAD_PATH = "/v1/upload"


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    data: str = Field(description="The file's bytes, base64 (a data: URI is taken too).")
    mime_type: str = Field(min_length=3, max_length=100)


def decode(spec: UploadRequest) -> bytes:
    """The upload's bytes; 413 past MEDIA_MAX_UPLOAD_BYTES, 400 when not base64."""
    text = spec.data
    if text.startswith("data:"):
        text = text.partition(",")[2]
    cap = settings.MEDIA_MAX_UPLOAD_BYTES
    if len(text) * 3 // 4 > cap + 3:
        raise ApiError(
            413, f"The file is too large: the limit is {cap / (1024 * 1024):g} MiB.",
            code="file_too_large",
        )  # fmt: skip
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "The 'data' field is not valid base64.") from None
    if len(data) > cap:
        raise ApiError(
            413, f"The file is too large: the limit is {cap / (1024 * 1024):g} MiB.",
            code="file_too_large",
        )  # fmt: skip
    return data


async def upload(
    caller: pipeline.Caller, body: dict, *, request_id: str, request: HttpRequest | None = None
) -> tuple[dict, pipeline.Call]:
    """Keep a caller's file for later calls; checked before anything is stored or booked."""
    spec = validate(UploadRequest, body)
    data = decode(spec)
    content_type = media.checked(data, spec.mime_type.lower(), "data")
    call = await pipeline.start(
        caller, request_id=request_id, product="uploads", endpoint=UPLOAD_PATH, request=request,
        units={"bytes": len(data)},
    )  # fmt: skip
    async with call:
        file = await media.keep(
            workspace_id=caller.workspace_id, data=data, content_type=content_type,
            purpose=Purpose.UPLOAD, request_id=request_id,
        )  # fmt: skip
        call.status = 200
    return media.describe(file, media.base_url(request)), call


@endpoint("POST")
async def upload_view(request: HttpRequest) -> HttpResponse:
    answer, _ = await upload(
        request.caller, json_body(request, media=True), request_id=request.request_id,
        request=request,
    )  # fmt: skip
    return JsonResponse(answer, status=201)


@endpoint("GET", auth=False)
async def content(request: HttpRequest, file_id: str) -> HttpResponse:
    """A stored file: by its signed link, or with a key of its workspace (404 for others)."""
    if "signature" in request.GET:
        file = await media.signed_file(
            file_id, request.GET.get("expires", ""), request.GET["signature"]
        )
    else:
        caller = await pipeline.authenticate(request)
        file = await media.find(caller.workspace_id, file_id)
    return media.file_response(file, await media.read(file))


SCHEMAS = {
    "File": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "file"},
            "purpose": {"type": "string"},
            "mime_type": {"type": "string"},
            "bytes": {"type": "integer"},
            "created_at": {"type": "integer"},
            "url": {"type": "string"},
        },
        "required": ["id", "object", "mime_type", "bytes", "url"],
    },
}

OPERATIONS = [
    Operation(
        UPLOAD_PATH, "post", "Keep a file (free) for later calls: its id and a signed link",
        (400, 401, 403, 413), "File", status=201, request=UploadRequest,
        example={"data": "iVBORw0KGgo...", "mime_type": "image/png"},
        view=upload_view, name="upload",
    ),
    Operation(
        "/v1/files/{file_id}/content", "get",
        "A stored file, by its signed link or with a key of its workspace",
        (*ACCOUNT_ERRORS, 404), {"type": "string", "format": "binary"},
        produces=("image/*", "audio/*", "video/*"), view=content, name="file_content",
    ),
]  # fmt: skip
