"""What a simulator node is told (settings) and what it has seen (stats)."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def _have(program: str) -> bool:
    return shutil.which(program) is not None


@dataclass
class SimulatorSettings:
    """Server-wide behaviour; tests may change fields while the server runs.

    `fail_status` makes every `/v1` call answer that status (with `Retry-After:
    fail_retry_after` when set) until it is cleared; `latency_ms` delays every
    answer; `job_seconds` is how long a music or video job takes.
    """

    chunk_delay_ms: float = 30.0
    key: str | None = field(default=None, repr=False)
    fail_status: int | None = None
    fail_retry_after: float | None = None
    latency_ms: float = 0.0
    job_seconds: float = 6.0
    use_ffmpeg: bool = field(default_factory=lambda: _have("ffmpeg"))
    use_espeak: bool = field(default_factory=lambda: _have("espeak-ng"))
    max_body_bytes: int = 32 * 1024 * 1024

    # Fields that `POST /_sim/config` may change.
    ADJUSTABLE = (
        "chunk_delay_ms",
        "fail_status",
        "fail_retry_after",
        "latency_ms",
        "job_seconds",
        "use_ffmpeg",
        "use_espeak",
    )

    def public(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("key")
        values["key_required"] = self.key is not None
        return values


@dataclass
class SimulatorStats:
    """Counters the tests read through `GET /_sim/stats` or the server handle."""

    requests: int = 0
    open_requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_cancelled: int = 0
    streams_reset: int = 0
    open_streams: int = 0
    faults_injected: int = 0
    websocket_sessions: int = 0
    open_websockets: int = 0
    jobs_created: int = 0
    jobs_cancelled: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    connections: Callable[[], int] | None = field(default=None, repr=False)

    def snapshot(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Counter):
                values[item.name] = {str(k): v for k, v in value.items()}
            elif item.name != "connections":
                values[item.name] = value
        values["open_connections"] = self.connections() if self.connections else None
        return values

    def reset(self) -> None:
        """Zero the counters; what is open now stays counted as open."""
        fresh = SimulatorStats()
        for item in fields(self):
            if item.name == "connections" or item.name.startswith("open_"):
                continue
            setattr(self, item.name, getattr(fresh, item.name))
