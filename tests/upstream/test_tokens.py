"""The shared token estimate and the token-count endpoint."""

from upstream import client
from upstream.tokens import count_tokens, tokenize


def test_tokens_join_back_into_the_text():
    text = "Hello, world!  Naïve café — 12345 tokens\nnext line"
    assert "".join(tokenize(text)) == text


def test_it_counts_about_four_characters_per_token():
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert len(text) / 5 < count_tokens(text) < len(text) / 2.5


def test_it_is_deterministic_and_counts_nothing_as_zero():
    assert count_tokens("") == 0
    assert count_tokens("same word") == count_tokens("same word") == 2


async def test_the_endpoint_counts_with_the_same_estimate(upstream_fleet):
    text = "How many tokens does this sentence have?"
    response = await client.token_count(upstream_fleet, {"model": "mira", "text": text})
    assert response.json()["tokens"] == count_tokens(text)


async def test_the_endpoint_counts_messages(upstream_fleet):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    response = await client.token_count(upstream_fleet, {"model": "mira", "messages": messages})
    assert response.json()["tokens"] == count_tokens("hi") + count_tokens("hello") + 4 * 2 + 2
