"""The member's pictures on the media pages: uploads, fresh links, and references they may send.

A picture travels through a page as a *reference*: its file id, signed for the member
and the workspace, so that a form can carry it (a hidden input) and a later request
can trust it without a lookup. Links to stored files expire, so the pages sign fresh
ones each time they show a file.
"""

import base64
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest

from gateway import files, media, pipeline
from gateway.asgi import new_request_id
from gateway.errors import ApiError
from gateway.models import StoredFile

SALT = "playground.media.reference"
IMAGE_TYPES = "image/png,image/jpeg,image/gif,image/webp"


@dataclass
class Picture:
    """A stored picture as a page shows it: its id, a fresh link and the reference to send."""

    file_id: str
    url: str
    reference: str


def caller_of(request: HttpRequest) -> pipeline.Caller:
    return pipeline.as_member(workspace_id=request.workspace.pk, user_id=request.user.pk)


def _salt(request: HttpRequest) -> str:
    return f"{SALT}:{request.workspace.pk}:{request.user.pk}"


def reference(request: HttpRequest, file_id: str) -> str:
    return signing.dumps(file_id, salt=_salt(request))


def file_id_of(request: HttpRequest, token: str) -> str | None:
    """The file id a reference stands for, or None when it is not one this member was given."""
    try:
        value = signing.loads(token, salt=_salt(request))
    except signing.BadSignature:
        return None
    return value if isinstance(value, str) else None


def pictures(request: HttpRequest, file_ids: list[str]) -> dict[str, Picture]:
    """The workspace's files among `file_ids`, each with a fresh link (others are left out)."""
    stored = StoredFile.objects.for_workspace(request.workspace.pk).filter(pk__in=file_ids)
    return {
        f.id: Picture(f.id, media.signed_path(f), reference(request, f.id))
        for f in stored
        if f.content_type.startswith("image/")
    }


async def upload(request: HttpRequest, upload: UploadedFile) -> Picture:
    """Keep an uploaded picture for the workspace (a free call, booked like every other)."""
    cap = settings.MEDIA_MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > cap:
        # Refused before it is read into memory; the gateway would refuse it too.
        raise ApiError(413, f"{upload.name}: too large, the limit is {cap / (1024 * 1024):g} MiB.")
    data = base64.b64encode(upload.read()).decode()
    body = {"data": data, "mime_type": upload.content_type or "application/octet-stream"}
    try:
        described, _ = await files.upload(
            caller_of(request), body, request_id=new_request_id(), request=request
        )
    except ApiError as exc:
        raise ApiError(exc.status, f"{upload.name}: {exc.detail}") from None
    # The page's own links are relative, like those `pictures()` signs.
    url = described["url"].removeprefix(media.base_url(request))
    return Picture(described["id"], url, reference(request, described["id"]))


def sounds(request: HttpRequest, file_ids: list[str]) -> dict[str, str]:
    """Fresh links to the workspace's audio files among `file_ids` (others are left out)."""
    stored = StoredFile.objects.for_workspace(request.workspace.pk).filter(pk__in=file_ids)
    return {f.id: media.signed_path(f) for f in stored if f.content_type.startswith("audio/")}
