"""`POST /v1/images/generate` and `POST /v1/images/edit`: real PNGs drawn from the prompt."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import textwrap
import time
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from upstream.simulator import fields
from upstream.simulator.web import ApiError, Request, Response, decode_data_uri, json_response

QUALITIES = ("low", "medium", "high", "auto")
FORMATS = ("url", "b64_json")


def palette(text: str, count: int = 4) -> list[tuple[int, int, int]]:
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i * 3], digest[i * 3 + 1], digest[i * 3 + 2]) for i in range(count)]


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(8, size))
    except (OSError, TypeError):
        return ImageFont.load_default()


def caption(image: Image.Image, text: str) -> None:
    """Write text on a translucent band across the bottom of the image."""
    width, height = image.size
    size = max(8, min(width, height) // 18)
    lines = textwrap.wrap(text, width=max(8, int(width / (size * 0.55))))[:4]
    if not lines:
        return
    band = int(size * 1.3 * len(lines) + size)
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((0, height - band, width, height), fill=(0, 0, 0, 140))
    for row, line in enumerate(lines):
        y = height - band + size // 2 + int(row * size * 1.3)
        draw.text((size // 2, y), line, fill=(255, 255, 255, 255), font=font(size))
    image.alpha_composite(overlay)


def draw_prompt(prompt: str, width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic picture: a gradient, shapes placed by the prompt, the prompt as caption."""
    colors = palette(f"{prompt}#{seed}", 6)
    start, end = colors[0], colors[1]
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(
        Image.new("RGBA", (width, height), end + (255,)),
        Image.new("RGBA", (width, height), start + (255,)),
        gradient,
    )
    draw = ImageDraw.Draw(image)
    digest = hashlib.sha256(f"shapes:{prompt}#{seed}".encode()).digest()
    for index in range(4):
        x = digest[index * 4] / 255 * width
        y = digest[index * 4 + 1] / 255 * height
        radius = (0.08 + digest[index * 4 + 2] / 255 * 0.2) * min(width, height)
        box = (x - radius, y - radius, x + radius, y + radius)
        color = colors[2 + index % 4] + (220,)
        if digest[index * 4 + 3] % 2:
            draw.ellipse(box, fill=color)
        else:
            draw.rectangle(box, fill=color)
    caption(image, prompt)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


def open_image(data: bytes, field_name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError):
        raise ApiError(400, f"The '{field_name}' field is not an image that can be read.") from None
    return image


def _result(pngs: list[bytes], prompt: str, response_format: str) -> Response:
    data = []
    for png in pngs:
        encoded = base64.b64encode(png).decode()
        item: dict[str, Any] = {"revised_prompt": f"{prompt} (simulated illustration)"}
        if response_format == "b64_json":
            item["b64_json"] = encoded
        else:
            item["url"] = f"data:image/png;base64,{encoded}"
        data.append(item)
    return json_response({"created": int(time.time()), "data": data})


async def generate(sim: Any, request: Request) -> Response:
    body = request.json()
    prompt = fields.required(body, "prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, "The 'prompt' field must be a string.")
    width, height = fields.size(body, "size", "1024x1024")
    count = fields.integer(body, "n", 1, 4, 1) or 1
    fields.choice(body, "quality", QUALITIES, "auto")
    response_format = fields.choice(body, "response_format", FORMATS, "url")
    references = fields.list_(body, "reference_images", 4) or []
    for index, reference in enumerate(references):
        if not isinstance(reference, str):
            raise ApiError(400, f"The 'reference_images[{index}]' field must be a string.")

    def render() -> list[bytes]:
        return [png_bytes(draw_prompt(prompt, width, height, seed)) for seed in range(count)]

    return _result(await asyncio.to_thread(render), prompt, response_format)


async def edit(sim: Any, request: Request) -> Response:
    if request.content_type == "multipart/form-data":
        form = request.form()
        body: dict[str, Any] = dict(form.fields)
        if "n" in body:
            body["n"] = int(body["n"]) if body["n"].isdigit() else body["n"]
        upload = form.files.get("image") or form.files.get("image[]")
        if upload is None:
            raise ApiError(400, "The 'image' field is required.")
        source = upload.data
    else:
        body = request.json()
        reference = fields.required(body, "image")
        if not isinstance(reference, str):
            raise ApiError(400, "The 'image' field must be a string.")
        if not reference.startswith("data:"):
            raise ApiError(400, "The 'image' field must be a data: URI on this simulator.")
        source = decode_data_uri(reference, "image")[1]
    prompt = fields.required(body, "prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, "The 'prompt' field must be a string.")
    picture = open_image(source, "image")
    size = fields.size(body, "size", f"{picture.width}x{picture.height}")
    count = fields.integer(body, "n", 1, 4, 1) or 1
    response_format = fields.choice(body, "response_format", FORMATS, "url")

    def render() -> list[bytes]:
        results = []
        for seed in range(count):
            tint = palette(f"{prompt}#{seed}", 1)[0]
            base = ImageOps.fit(picture.convert("RGB"), size)
            toned = ImageOps.colorize(ImageOps.grayscale(base), (0, 0, 0), tint)
            blended = Image.blend(base, toned, 0.6).convert("RGBA")
            caption(blended, prompt)
            results.append(png_bytes(blended))
        return results

    return _result(await asyncio.to_thread(render), prompt, response_format)
