"""Embeddings: deterministic unit vectors where related texts are closer."""

import base64
import math
import struct

import pytest

from upstream import client
from upstream.errors import UpstreamError


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def embed(fleet, texts, **extra) -> list:
    response = await client.embeddings(fleet, {"model": "mira-embed", "input": texts, **extra})
    return [item["embedding"] for item in response.json()["data"]]


async def test_vectors_are_unit_length_and_deterministic(upstream_fleet):
    first, second = await embed(upstream_fleet, ["the quick brown fox", "the quick brown fox"])
    assert len(first) == 1536
    assert math.isclose(math.sqrt(sum(v * v for v in first)), 1.0, abs_tol=1e-3)
    assert first == second


async def test_related_texts_are_closer_than_unrelated_ones(upstream_fleet):
    cat, cats, tax = await embed(
        upstream_fleet,
        [
            "the cat sat on the warm mat",
            "a cat sleeping on a warm mat",
            "quarterly corporate tax filing deadlines",
        ],
    )
    assert cosine(cat, cats) > cosine(cat, tax) + 0.2


async def test_it_honours_dimensions_and_base64(upstream_fleet):
    (floats,) = await embed(upstream_fleet, "hello world", dimensions=256)
    (encoded,) = await embed(
        upstream_fleet, "hello world", dimensions=256, encoding_format="base64"
    )
    decoded = struct.unpack("<256f", base64.b64decode(encoded))
    assert len(floats) == 256
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(floats, decoded, strict=True))


async def test_it_reports_usage_and_model(upstream_fleet):
    response = await client.embeddings(
        upstream_fleet, {"model": "mira-embed", "input": "four words right here"}
    )
    body = response.json()
    assert body["model"] == "mira-embed"
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


async def test_it_rejects_a_chat_model(upstream_fleet):
    with pytest.raises(UpstreamError) as caught:
        await client.embeddings(upstream_fleet, {"model": "mira", "input": "x"})
    assert caught.value.status == 400
    assert "mira-embed" in caught.value.detail
