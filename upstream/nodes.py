"""One upstream node: its configuration and what the fleet has seen of it."""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from upstream.errors import FleetConfigError

# How far back "recent errors" reach on the fleet page.
ERROR_WINDOW_SECONDS = 300.0

_VERSION = re.compile(r"v[0-9]+")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model id as the caller wrote it, split into provider and bare model."""

    provider: str | None
    name: str

    @property
    def full(self) -> str:
        return f"{self.provider}/{self.name}" if self.provider else self.name


def parse_model(model: str) -> ModelRef:
    """Split `provider/model` (seed 003) into its parts; a plain id has no provider."""
    provider, slash, name = model.partition("/")
    if slash and provider and name:
        return ModelRef(provider, name)
    return ModelRef(None, model)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """How to reach a node. `base_url` is what the operator wrote, e.g. `https://host/v1`."""

    name: str
    base_url: str
    api_key: str = field(repr=False)
    weight: float = 1.0
    models: frozenset[str] | None = None
    provider: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise FleetConfigError("every node needs a name")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FleetConfigError(f"node {self.name}: base_url must be an http(s) URL")
        if not self.api_key:
            raise FleetConfigError(f"node {self.name}: an API key is required")
        if not self.weight > 0:
            raise FleetConfigError(f"node {self.name}: weight must be a positive number")

    @property
    def root_url(self) -> str:
        """The base URL without its trailing version segment; request paths carry `/v1`."""
        parts = urlsplit(self.base_url.rstrip("/"))
        head, _, last = parts.path.rpartition("/")
        path = head if _VERSION.fullmatch(last) else parts.path
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    @property
    def public_url(self) -> str:
        """The base URL with any user information removed, safe to show."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))

    def serves(self, ref: ModelRef) -> bool:
        if ref.provider and ref.provider not in (self.name, self.provider):
            return False
        return self.models is None or ref.name in self.models


class Node:
    """A node and its live statistics. Thread-safe: loops in several threads share it."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self.outstanding = 0
        self.healthy = True
        self.consecutive_failures = 0
        self.ejections = 0  # times ejected since this process started (/metrics)
        self.cooldown_until = 0.0
        self.next_probe_at = 0.0
        self.probing = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._latencies: deque[float] = deque(maxlen=200)
        self._errors: deque[float] = deque(maxlen=1000)

    @property
    def name(self) -> str:
        return self.config.name

    def begin(self) -> None:
        with self._lock:
            self.outstanding += 1

    def end(self) -> None:
        with self._lock:
            self.outstanding -= 1

    def record_success(self, latency_ms: float | None) -> bool:
        """Note an answer from the node; True when this readmits an ejected node."""
        with self._lock:
            if latency_ms is not None:
                self._latencies.append(latency_ms)
            self.consecutive_failures = 0
            readmitted = not self.healthy
            self.healthy = True
            return readmitted

    def record_failure(self, detail: str, *, eject_after: int, probe_interval: float) -> bool:
        """Note a failure; True when this ejects the node."""
        now = time.monotonic()
        with self._lock:
            self._note_error(detail, now)
            self.consecutive_failures += 1
            if self.healthy and self.consecutive_failures >= eject_after:
                self.healthy = False
                self.ejections += 1
                self.next_probe_at = now + probe_interval
                return True
            return False

    def record_rate_limit(self, detail: str, retry_after: float | None) -> None:
        now = time.monotonic()
        with self._lock:
            self._note_error(detail, now)
            self.cooldown_until = max(self.cooldown_until, now + (retry_after or 1.0))

    def _note_error(self, detail: str, now: float) -> None:
        self._errors.append(now)
        self.last_error = detail
        self.last_error_at = time.time()

    def probe_due(self, now: float) -> bool:
        with self._lock:
            if self.healthy or self.probing or now < self.next_probe_at:
                return False
            self.probing = True
            return True

    def probe_finished(self, ok: bool, probe_interval: float) -> bool:
        """Record a probe's outcome; True when it readmits the node."""
        with self._lock:
            self.probing = False
            if ok:
                readmitted = not self.healthy
                self.healthy = True
                self.consecutive_failures = 0
                self.cooldown_until = 0.0
                return readmitted
            self.next_probe_at = time.monotonic() + probe_interval
            return False

    def p50_ms(self) -> float | None:
        with self._lock:
            values = list(self._latencies)
        return round(statistics.median(values), 1) if values else None

    def recent_errors(self) -> int:
        horizon = time.monotonic() - ERROR_WINDOW_SECONDS
        with self._lock:
            return sum(1 for at in self._errors if at >= horizon)

    def state(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "name": self.name,
            "base_url": self.config.public_url,
            "provider": self.config.provider,
            "models": sorted(self.config.models) if self.config.models is not None else None,
            "weight": self.config.weight,
            "healthy": self.healthy,
            "outstanding": self.outstanding,
            "p50_ms": self.p50_ms(),
            "recent_errors": self.recent_errors(),
            "consecutive_failures": self.consecutive_failures,
            "ejections": self.ejections,
            "cooling_down": self.cooldown_until > now,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }
