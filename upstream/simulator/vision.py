"""`POST /v1/vision/locate`: a normalised box (or grid cells) for a described target.

When the description names a colour, the box really bounds the pixels of that
colour in the image (and `found` is false when there are none); otherwise the box
is derived from a hash of the description and the image, so it is deterministic.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from typing import Any

from PIL import Image, UnidentifiedImageError

from upstream.simulator import fields
from upstream.simulator.web import ApiError, Request, Response, decode_data_uri, json_response

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 180),
    "pink": (240, 130, 180),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
}


def _colour_box(
    image: Image.Image, target: tuple[int, int, int]
) -> tuple[list[float], float] | None:
    small = image.convert("RGB")
    small.thumbnail((160, 160))
    width, height = small.size
    xs, ys = [], []
    pixels = small.tobytes()
    for index in range(width * height):
        r, g, b = pixels[index * 3 : index * 3 + 3]
        if abs(r - target[0]) + abs(g - target[1]) + abs(b - target[2]) < 120:
            xs.append(index % width)
            ys.append(index // width)
    if not xs:
        return None
    box = [
        min(xs) / width,
        min(ys) / height,
        (max(xs) + 1 - min(xs)) / width,
        (max(ys) + 1 - min(ys)) / height,
    ]
    coverage = len(xs) / max(1, (max(xs) + 1 - min(xs)) * (max(ys) + 1 - min(ys)))
    return box, round(min(0.99, 0.6 + 0.4 * coverage), 2)


def _hashed_box(query: str, image_key: bytes) -> tuple[list[float], float]:
    digest = hashlib.sha256(query.lower().encode() + image_key).digest()
    width = 0.15 + digest[0] / 255 * 0.35
    height = 0.15 + digest[1] / 255 * 0.35
    x = digest[2] / 255 * (1 - width)
    y = digest[3] / 255 * (1 - height)
    return [x, y, width, height], round(0.55 + digest[4] / 255 * 0.4, 2)


def _cells(box: list[float], rows: int, cols: int) -> list[list[int]]:
    x, y, w, h = box
    first_row, last_row = int(y * rows), min(rows - 1, int((y + h) * rows - 1e-9))
    first_col, last_col = int(x * cols), min(cols - 1, int((x + w) * cols - 1e-9))
    return [[r, c] for r in range(first_row, last_row + 1) for c in range(first_col, last_col + 1)]


def locate_in(image: Image.Image | None, query: str, image_key: bytes) -> dict[str, Any]:
    colour = next((COLOURS[w] for w in query.lower().split() if w in COLOURS), None)
    if colour is not None and image is not None:
        found = _colour_box(image, colour)
        if found is None:
            return {"found": False, "bbox": None, "confidence": 0.05}
        box, confidence = found
    else:
        box, confidence = _hashed_box(query, image_key)
    bbox = dict(zip(("x", "y", "width", "height"), (round(v, 4) for v in box), strict=True))
    return {"found": True, "bbox": bbox, "confidence": confidence}


async def locate(sim: Any, request: Request) -> Response:
    body = request.json()
    name = "image" if "image" in body else "image_url"
    reference = fields.required(body, name)
    if isinstance(reference, dict):
        reference = reference.get("url")
    if not isinstance(reference, str):
        raise ApiError(400, f"The '{name}' field must be a URL or a data: URI.")
    query_name = next((n for n in ("target", "query", "prompt") if n in body), "target")
    query = fields.required(body, query_name)
    if not isinstance(query, str):
        raise ApiError(400, f"The '{query_name}' field must be a string.")
    mode = fields.choice(body, "mode", ("bbox", "grid"), "bbox")
    grid = fields.object_(body, "grid") or {}
    rows = fields.integer(grid, "rows", 1, 20, 3) or 3
    cols = fields.integer(grid, "cols", 1, 20, 3) or 3

    image = None
    image_key = reference.encode()
    if reference.startswith("data:"):
        data = decode_data_uri(reference, name)[1]
        image_key = hashlib.sha256(data).digest()
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (UnidentifiedImageError, OSError, ValueError):
            raise ApiError(400, f"The '{name}' field is not an image that can be read.") from None
    elif not reference.startswith(("http://", "https://")):
        raise ApiError(400, f"The '{name}' field must be a URL or a data: URI.")

    result = await asyncio.to_thread(locate_in, image, query, image_key)
    result["target"] = query
    if image is not None:
        result["image"] = {"width": image.width, "height": image.height}
    if mode == "grid":
        box = result.pop("bbox")
        result["grid"] = {"rows": rows, "cols": cols}
        result["cells"] = (
            _cells([box["x"], box["y"], box["width"], box["height"]], rows, cols) if box else []
        )
    return json_response(result)
