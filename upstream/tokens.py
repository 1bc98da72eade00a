"""A cheap, deterministic token estimate shared by the simulator and the gateway.

A token is a run of up to four letters or digits (with the whitespace before it),
or one punctuation mark. That gives roughly four characters per token on English
prose, slightly more tokens than real tokenizers produce, which is the safe side
for holding a worst-case cost.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*(?:\w{1,4}|[^\w\s])|\s+")


def tokenize(text: str) -> list[str]:
    """Split text into tokens that join back into exactly the same text."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """How many tokens `text` counts as."""
    if not text:
        return 0
    return sum(1 for _ in _TOKEN.finditer(text))
