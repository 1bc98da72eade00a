"""`GET /v1/models`, `POST /v1/embeddings` and `POST /v1/extras/token-count`.

Embeddings hash each word (and its first five letters, so that "cat" and "cats"
share a feature) into a signed slot of the vector, then normalise: texts that share
words are measurably closer by cosine than texts that do not.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from typing import Any

from upstream.simulator import fields
from upstream.simulator.web import ApiError, Request, Response, json_response
from upstream.tokens import count_tokens

CREATED = 1714867200
_WORD = re.compile(r"\w+", re.UNICODE)


def _model_object(model_id: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": CREATED,
        "owned_by": "vmira",
        **fields.MODEL_INFO[model_id],
    }


async def list_models(sim: Any, request: Request) -> Response:
    names = fields.CHAT_MODELS + fields.EMBEDDING_MODELS
    return json_response({"object": "list", "data": [_model_object(m) for m in names]})


async def get_model(sim: Any, request: Request) -> Response:
    model_id = request.path_params["model"]
    if model_id not in fields.MODEL_INFO:
        raise ApiError(404, f"Model '{model_id}' not found.")
    return json_response(_model_object(model_id))


def _features(text: str) -> list[str]:
    words = [w.lower() for w in _WORD.findall(text)]
    features = list(words)
    features += [f"stem:{w[:5]}" for w in words if len(w) > 5]
    return features or [f"empty:{text}"]


def embed(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for text."""
    vector = [0.0] * dimensions
    for feature in _features(text):
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "little") % dimensions
        sign = 1.0 if digest[4] & 1 else -1.0
        weight = 0.5 if feature.startswith("stem:") else 1.0
        vector[slot] += sign * weight
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


async def embeddings(sim: Any, request: Request) -> Response:
    body = request.json()
    model = fields.model(body, fields.EMBEDDING_MODELS)
    value = fields.required(body, "input")
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        texts = value
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        texts = [" ".join(str(v) for v in value)]
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(v, list) and all(isinstance(i, int) for i in v) for v in value)
    ):
        texts = [" ".join(str(i) for i in v) for v in value]
    else:
        raise ApiError(400, "The 'input' field must be a string or an array of strings.")
    if len(texts) > 2048:
        raise ApiError(400, "The 'input' field allows at most 2048 items.")
    dimensions = fields.integer(body, "dimensions", 1, 3072, 1536)
    assert dimensions is not None
    encoding = fields.choice(body, "encoding_format", ("float", "base64"), "float")
    data = []
    for index, text in enumerate(texts):
        vector = embed(text, dimensions)
        encoded: Any = vector
        if encoding == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count_tokens(t) for t in texts)
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_text_of(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(_text_of(v) for k, v in value.items() if k in ("content", "text"))
    return ""


async def token_count(sim: Any, request: Request) -> Response:
    body = request.json()
    model = fields.string(body, "model", "mira")
    for name in ("text", "input", "messages"):
        if name in body:
            value = body[name]
            if not isinstance(value, str | list):
                raise ApiError(400, f"The '{name}' field must be a string or an array.")
            text = _text_of(value)
            tokens = count_tokens(text)
            if name == "messages":
                tokens += 4 * len(value) + 2
            return json_response(
                {
                    "object": "token_count",
                    "model": model,
                    "tokens": tokens,
                    "input_tokens": tokens,
                    "characters": len(text),
                }
            )
    raise ApiError(400, "The 'text' field is required (or 'input', or 'messages').")
