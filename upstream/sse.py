"""Server-Sent Events: split an upstream stream into its events, and encode events for one.

A relay passes most events on as they came, so an event's data stays bytes and is
parsed as JSON only when something asks for it (`Chunk.data`).
"""

from __future__ import annotations

import json
from typing import Any

DONE = b"[DONE]"


class Chunk:
    """The data of one event as the upstream sent it (`raw`), parsed on first use (`data`)."""

    __slots__ = ("_data", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._data: dict[str, Any] | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The JSON object the event carries; ValueError when it is not one."""
        if self._data is None:
            value = json.loads(self.raw)
            if not isinstance(value, dict):
                raise ValueError("an SSE data line did not hold a JSON object")
            self._data = value
        return self._data

    def __repr__(self) -> str:
        return f"Chunk({self.raw!r})"


def is_done(data: bytes) -> bool:
    """True for the `[DONE]` that ends an OpenAI-style stream."""
    return data == DONE or (len(data) < 16 and data.strip() == DONE)


class EventReader:
    """Splits the bytes of an event stream, in pieces as they arrive, into the data of
    each event (its `data:` lines joined by newlines). Comments and events without
    data are skipped; `\\r\\n` and `\\r` line breaks are read as `\\n`."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, piece: bytes) -> list[bytes]:
        data = self._rest + piece if self._rest else piece
        keep = b""
        if b"\r" in data:
            if data.endswith(b"\r"):  # perhaps the first half of a \r\n
                data, keep = data[:-1], b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, rest = data.split(b"\n\n")
        self._rest = rest + keep
        return [value for value in map(_data_of, blocks) if value is not None]

    def flush(self) -> list[bytes]:
        """The last event, when the stream ended without a blank line after it."""
        rest, self._rest = self._rest, b""
        value = _data_of(rest.replace(b"\r", b""))
        return [] if value is None else [value]


def _data_of(block: bytes) -> bytes | None:
    """The data of one event's lines, or None when it has no `data:` line."""
    if block.startswith(b"data: ") and b"\n" not in block:
        return block[6:]
    data = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if name == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(data) if data else None


def encode(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    """One SSE event as bytes: `event:` (when named) and a single `data:` line."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def encode_done() -> bytes:
    return b"data: [DONE]\n\n"
