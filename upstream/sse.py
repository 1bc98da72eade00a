"""Server-Sent Events: parse an upstream stream, and encode events for one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its `data` text (lines joined with newlines) and optional name."""

    data: str
    event: str | None = None


class EventDecoder:
    """Turns lines of an SSE stream into events, one line at a time."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None

    def feed(self, line: str) -> Event | None:
        """Take one line (without its line break); return an event when one ends."""
        if line == "":
            if not self._data:
                self._event = None
                return None
            event = Event("\n".join(self._data), self._event)
            self._data = []
            self._event = None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def flush(self) -> Event | None:
        """The last event when the stream ends without a blank line."""
        return self.feed("")


def parse_data(event: Event) -> dict[str, Any] | None:
    """The JSON object an event carries, or None for `[DONE]`."""
    if event.data.strip() == DONE:
        return None
    value = json.loads(event.data)
    if not isinstance(value, dict):
        raise ValueError("an SSE data line did not hold a JSON object")
    return value


def encode(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    """One SSE event as bytes: `event:` (when named) and a single `data:` line."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def encode_done() -> bytes:
    return b"data: [DONE]\n\n"
