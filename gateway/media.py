"""Media the console keeps: uploads and copies of generated results, per workspace.

Files live in the `media` storage (Django's storage API: the local file system unless
a django-storages backend is configured) and are handed out as signed links that
expire (`MEDIA_LINK_SECONDS`), so that `<img src>` and curl work without a key. A key
of the owning workspace reads a file without a signature; any other caller gets 404.

A file given to a product (`reference_images`, `image`, ...) may be a data: URI, a
file id (`file_...`) or a link to a file this workspace stored; `image_input()` turns
each into the data: URI sent upstream, so the upstream never fetches anything.
"""

import asyncio
import base64
import binascii
import functools
import hmac
import io
import re
import time
import warnings

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.core.signing import Signer
from django.http import HttpRequest, HttpResponse
from PIL import Image, UnidentifiedImageError

from gateway.errors import ApiError
from gateway.models import Purpose, StoredFile

# What a picture may decode to: a few megabytes of PNG can hold a picture that fills
# gigabytes once decoded (a decompression bomb).
MAX_IMAGE_PIXELS = 50_000_000
IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "audio/wav": "wav",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/pcm": "pcm",
    "audio/opus": "opus",
    "video/mp4": "mp4",
    "video/webm": "webm",
}
# Served as they are; anything else is served in a sandbox.
_INLINE = ("image/", "audio/", "video/")
_DATA_URI = re.compile(r"^data:([a-z]+/[a-z0-9+.-]+)?(;[^,]*)?,", re.IGNORECASE)
_FILE_LINK = re.compile(r"^(?:https?://[^/]+)?/v1/files/(file_[0-9a-f]{24})/content(?:\?.*)?$")
_FILE_ID = re.compile(r"^file_[0-9a-f]{24}$")


@functools.cache
def _signer() -> Signer:
    # Built on first use, not on import: a Signer reads SECRET_KEY, and the console's URLs
    # import this module before the checks that explain a missing secret can run.
    return Signer(salt="gateway.media")


def sniff(data: bytes) -> str | None:
    """The content type the bytes themselves say (their magic number), if one we keep."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data.startswith(b"ID3") or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if data.startswith(b"OggS"):
        return "audio/ogg"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def check_image(data: bytes, field: str) -> tuple[int, int]:
    """(width, height) of an image that can be read and is not a decompression bomb;
    400 naming `field` otherwise. Only the header is read: a bomb is refused by the
    size it declares, before anything is decoded."""
    try:
        with warnings.catch_warnings(action="error", category=Image.DecompressionBombWarning):
            with Image.open(io.BytesIO(data)) as picture:
                size = picture.size
                if size[0] * size[1] <= MAX_IMAGE_PIXELS:
                    picture.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        size = (MAX_IMAGE_PIXELS, 2)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ApiError(400, f"The '{field}' field is not an image that can be read.") from None
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ApiError(
            400,
            f"The '{field}' image has too many pixels: at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels.",
            code="image_too_large",
        )
    return size


def checked(data: bytes, content_type: str, field: str) -> str:
    """The content type of bytes that are what they are declared to be; 400 otherwise."""
    if not data:
        raise ApiError(400, f"The '{field}' field is empty: send the file's bytes.")
    actual = sniff(data)
    if content_type not in EXTENSIONS:
        kinds = ", ".join(EXTENSIONS)
        raise ApiError(
            400, f"The type {content_type!r} cannot be kept; use one of: {kinds}.", code="bad_type"
        )
    if actual != content_type:
        said = f"is {actual}" if actual else "is none of the types the console keeps"
        raise ApiError(
            400,
            f"The '{field}' bytes are not {content_type}: the file {said}.",
            code="type_mismatch",
        )
    if content_type in IMAGE_TYPES:
        check_image(data, field)
    return content_type


def _store(
    workspace_id: int, purpose: str, data: bytes, content_type: str, request_id: str,
    file_id: str | None = None,
):  # fmt: skip
    file = StoredFile(
        **({"id": file_id} if file_id else {}),
        workspace_id=workspace_id,
        purpose=purpose,
        content_type=content_type,
        size=len(data),
        request_id=request_id,
    )
    name = f"{workspace_id}/{file.id}.{EXTENSIONS.get(content_type, 'bin')}"
    file.storage_name = storages["media"].save(name, ContentFile(data))
    file.save()
    return file


async def keep(
    *, workspace_id: int, data: bytes, content_type: str, purpose: str = Purpose.IMAGE,
    request_id: str = "", file_id: str | None = None,
) -> StoredFile:  # fmt: skip
    """Store bytes (checked already) for a workspace, under `file_id` when one was
    promised already (a streamed result names its file before it is complete)."""
    return await asyncio.to_thread(
        _store, workspace_id, purpose, data, content_type, request_id, file_id
    )


def signed_path(file: StoredFile, *, seconds: int | None = None) -> str:
    """The file's link, working without a key until it expires."""
    expires = int(time.time()) + (seconds or settings.MEDIA_LINK_SECONDS)
    signature = _signer().signature(f"{file.id}:{expires}")
    return f"/v1/files/{file.id}/content?expires={expires}&signature={signature}"


def signed_url(file: StoredFile, base_url: str = "") -> str:
    """`signed_path`, absolute when `base_url` (the console's, e.g. http://host:8000) is given."""
    return base_url.rstrip("/") + signed_path(file)


def base_url(request: HttpRequest | None) -> str:
    return request.build_absolute_uri("/").rstrip("/") if request is not None else ""


def _valid_signature(file_id: str, expires: str, signature: str) -> bool:
    expected = _signer().signature(f"{file_id}:{expires}")
    return hmac.compare_digest(expected.encode(), signature.encode())


async def find(workspace_id: int, file_id: str, *, field: str = "file") -> StoredFile:
    """The workspace's file; 404 for any other (another workspace's too)."""
    file = await StoredFile.objects.for_workspace(workspace_id).filter(pk=file_id).afirst()
    if file is None:
        raise ApiError(404, f"No file {file_id} in this workspace ('{field}').", code="not_found")
    return file


def _read(file: StoredFile) -> bytes:
    with storages["media"].open(file.storage_name, "rb") as handle:
        return handle.read()


async def read(file: StoredFile) -> bytes:
    return await asyncio.to_thread(_read, file)


def decode_data_uri(value: str, field: str) -> tuple[str, bytes]:
    """(declared type, bytes) of a base64 data: URI; 400 naming `field` otherwise."""
    match = _DATA_URI.match(value)
    if match is None or ";base64" not in (match.group(2) or "").lower():
        raise ApiError(400, f"The '{field}' field is not a base64 data: URI.")
    try:
        data = base64.b64decode(value[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"The '{field}' field holds invalid base64.") from None
    return (match.group(1) or "").lower(), data


async def image_input(workspace_id: int, value: object, field: str) -> str:
    """An image given to a product, as the data: URI sent upstream: a data: URI, a file
    id, or a link to a file this workspace stored. Any other URL is refused, so that
    nothing is fetched on a caller's behalf."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"The '{field}' field must be a data: URI or a file id.")
    if value.startswith("data:"):
        declared, data = decode_data_uri(value, field)
        content_type = sniff(data)
        if content_type not in IMAGE_TYPES:
            raise ApiError(400, f"The '{field}' field is not a PNG, JPEG, GIF or WebP image.")
        if declared and declared != content_type:
            raise ApiError(400, f"The '{field}' image says it is {declared} but is {content_type}.")
        check_image(data, field)
        return value
    link = _FILE_LINK.match(value)
    file_id = link.group(1) if link else value if _FILE_ID.match(value) else None
    if file_id is None:
        raise ApiError(
            400,
            f"The '{field}' field must be a data: URI, a file id (file_...) or a link to a file "
            "this workspace stored; other URLs are not fetched.",
        )
    file = await find(workspace_id, file_id, field=field)
    if file.content_type not in IMAGE_TYPES:
        raise ApiError(400, f"The '{field}' file {file.id} is not an image.")
    data = await read(file)
    return f"data:{file.content_type};base64,{base64.b64encode(data).decode()}"


def describe(file: StoredFile, base: str = "") -> dict:
    """A stored file as the API answers it."""
    return {
        "id": file.id,
        "object": "file",
        "purpose": file.purpose,
        "mime_type": file.content_type,
        "bytes": file.size,
        "created_at": int(file.created_at.timestamp()),
        "url": signed_url(file, base),
    }


def file_response(file: StoredFile, data: bytes) -> HttpResponse:
    """The file with its real type; never sniffed, and sandboxed unless it is media."""
    response = HttpResponse(data, content_type=file.content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=300"
    extension = EXTENSIONS.get(file.content_type, "bin")
    response["Content-Disposition"] = f'inline; filename="{file.id}.{extension}"'
    if not file.content_type.startswith(_INLINE):
        response["Content-Security-Policy"] = "sandbox"
    return response


async def signed_file(file_id: str, expires: str, signature: str) -> StoredFile:
    """The file a signed link points to; 403 when the link is expired or forged."""
    if not expires.isdigit() or not _valid_signature(file_id, expires, signature):
        raise ApiError(403, "This file link is not valid.", code="invalid_link")
    if int(expires) < time.time():
        raise ApiError(403, "This file link has expired; ask for a new one.", code="expired_link")
    file = await StoredFile.objects.filter(pk=file_id).afirst()
    if file is None:
        raise ApiError(404, f"No file {file_id}.", code="not_found")
    return file


def _purge(before) -> int:
    storage = storages["media"]
    count = 0
    for file in StoredFile.objects.filter(created_at__lt=before).iterator():
        storage.delete(file.storage_name)
        file.delete()
        count += 1
    return count


def purge(*, days: int) -> int:
    """Delete the files older than `days` (their bytes, then their rows); how many."""
    from datetime import timedelta

    from django.utils import timezone

    return _purge(timezone.now() - timedelta(days=days))
