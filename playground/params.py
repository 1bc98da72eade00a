"""What the page sends: the conversation's settings and image attachments, checked.

A bad value is answered with one clear sentence naming the field, never a traceback.
"""

import base64
import binascii
import io
import json
import re
import warnings
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_COLUMNS = 3
MAX_IMAGES = 4
MAX_IMAGE_BYTES = 4 * 1024 * 1024
# What an image may decode to: a few megabytes of PNG can hold a picture that fills
# gigabytes once decoded (a decompression bomb). Below Pillow's own warning threshold.
MAX_IMAGE_PIXELS = 50_000_000
MAX_TEXT = 100_000
IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
_DATA_URI = re.compile(r"^data:(image/[a-z+.-]+);base64,([A-Za-z0-9+/]*={0,2})$")

LABELS = {
    "model": "Model",
    "temperature": "Temperature",
    "top_p": "Top P",
    "max_tokens": "Max tokens",
    "stop": "Stop sequences",
    "system": "System prompt",
    "response_format": "Response format",
    "json_schema": "JSON schema",
    "columns": "Columns",
}


class Invalid(ValueError):
    """Something the member sent cannot be used; the message says what and why."""


class Column(BaseModel):
    """One model and its sampling parameters: the chat, or one side of a comparison."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=128)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    leaf: int | None = None


class Settings(BaseModel):
    """A conversation's settings: shared prompt and output options, and one to three columns."""

    model_config = ConfigDict(extra="ignore")

    system: str = Field(default="", max_length=MAX_TEXT)
    stop: list[str] = Field(default_factory=list, max_length=4)
    response_format: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: str = Field(default="", max_length=MAX_TEXT)
    columns: list[Column] = Field(min_length=1, max_length=MAX_COLUMNS)
    active: int = Field(default=0, ge=0, lt=MAX_COLUMNS)

    @field_validator("stop")
    @classmethod
    def stops_are_short(cls, value: list[str]) -> list[str]:
        value = [s for s in value if s]
        if any(len(s) > 64 for s in value):
            raise ValueError("each stop sequence may be at most 64 characters")
        return value

    @model_validator(mode="after")
    def schema_is_json(self) -> "Settings":
        if self.response_format == "json_schema":
            try:
                schema = json.loads(self.json_schema or "")
            except ValueError:
                raise ValueError("JSON schema: enter a JSON object (e.g. a JSON Schema)") from None
            if not isinstance(schema, dict):
                raise ValueError("JSON schema: enter a JSON object (e.g. a JSON Schema)")
        if self.active >= len(self.columns):
            self.active = 0
        return self

    def response_format_body(self) -> dict[str, Any] | None:
        if self.response_format == "json_object":
            return {"type": "json_object"}
        if self.response_format == "json_schema":
            schema = json.loads(self.json_schema)
            if "schema" in schema and isinstance(schema["schema"], dict):
                return {"type": "json_schema", "json_schema": schema}
            return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
        return None

    def request_params(self, column: Column) -> dict[str, Any]:
        """The request's fields other than the messages (and streaming), as a client sends them."""
        params: dict[str, Any] = {"model": column.model}
        for name in ("temperature", "top_p", "max_tokens"):
            value = getattr(column, name)
            if value is not None:
                params[name] = value
        if self.stop:
            params["stop"] = self.stop
        response_format = self.response_format_body()
        if response_format:
            params["response_format"] = response_format
        return params


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = [part for part in error["loc"] if part != "__root__"]
    message = error["msg"].removeprefix("Value error, ")
    if not location:
        return message[:1].upper() + message[1:] + "."
    field = next((str(p) for p in reversed(location) if isinstance(p, str)), "")
    label = LABELS.get(field, field.replace("_", " ").capitalize())
    if len(location) >= 2 and location[0] == "columns" and isinstance(location[1], int):
        label += f" (column {'ABC'[location[1]] if location[1] < 3 else location[1] + 1})"
    return f"{label}: {message[:1].lower() + message[1:]}."


def parse_settings(data: Any) -> Settings:
    """Settings from the page, or `Invalid` naming the first bad field."""
    if not isinstance(data, dict):
        raise Invalid("Settings are missing.")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise Invalid(_describe(exc)) from None


def parse_text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid("The message must be text.")
    if len(value) > MAX_TEXT:
        raise Invalid(f"The message is too long: at most {MAX_TEXT:,} characters.")
    return value


def parse_images(value: Any) -> list[str]:
    """Attached images as data: URIs, each a PNG, JPEG, GIF or WebP of at most 4 MB."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid("Attachments must be images.")
    if len(value) > MAX_IMAGES:
        raise Invalid(f"Attach at most {MAX_IMAGES} images to one message.")
    return [_check_image(uri, index) for index, uri in enumerate(value, start=1)]


def _check_image(uri: str, number: int) -> str:
    match = _DATA_URI.match(uri)
    if match is None or match.group(1) not in IMAGE_TYPES:
        raise Invalid(f"Image {number} is not a PNG, JPEG, GIF or WebP image.")
    media_type, payload = match.groups()
    if len(payload) * 3 // 4 > MAX_IMAGE_BYTES + 2:
        raise Invalid(f"Image {number} is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"Image {number} could not be read.") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise Invalid(f"Image {number} is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB.")
    try:
        # Pillow warns of a possible decompression bomb past its own limit (and refuses one
        # of twice as many pixels); either way the image is over this one.
        with warnings.catch_warnings(action="error", category=Image.DecompressionBombWarning):
            with Image.open(io.BytesIO(data)) as picture:
                actual, pixels = picture.format, picture.width * picture.height
                if pixels <= MAX_IMAGE_PIXELS:
                    picture.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        pixels = MAX_IMAGE_PIXELS + 1
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise Invalid(f"Image {number} could not be read as an image.") from None
    if pixels > MAX_IMAGE_PIXELS:
        raise Invalid(
            f"Image {number} has too many pixels: the limit is {MAX_IMAGE_PIXELS // 1_000_000} megapixels."
        )
    if actual != IMAGE_TYPES[media_type]:
        raise Invalid(f"Image {number} says it is {media_type} but is not.")
    return uri


def image_bytes(uri: str) -> tuple[str, bytes]:
    """The media type and bytes of a stored (already checked) image."""
    match = _DATA_URI.match(uri)
    if match is None:
        raise Invalid("Not an image.")
    return match.group(1), base64.b64decode(match.group(2))
