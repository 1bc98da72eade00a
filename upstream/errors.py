"""The one error type the upstream package raises for a failed call."""

from __future__ import annotations

import re

# Statuses worth trying again, on another node when there is one (seed 004).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

_KEY_PATTERN = re.compile(r"sk-mira-[A-Za-z0-9_\-]+")


def redact(text: str, *secrets: str) -> str:
    """Remove the given secrets, and anything shaped like a Mira key, from text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_PATTERN.sub("sk-mira-[redacted]", text)


class UpstreamError(Exception):
    """A call to an upstream Mira node failed.

    `status` is the upstream HTTP status, or 502 when the connection failed or was
    reset and 504 when a timeout expired. `retry_after` is in seconds (from the
    `Retry-After` header) or None. `node` names the node that answered last, or is
    None when no node was tried. `detail` is the upstream's own `detail` text (or a
    description of the failure) with any key removed, so it is safe to log and to
    show; `message` adds the status and the node.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        node: str | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.status = status
        self.detail = redact(detail, *secrets)
        self.node = node
        self.retry_after = retry_after
        self.code = code
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = f" from node {self.node}" if self.node else ""
        return f"Upstream error {self.status}{where}: {self.detail}"

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"UpstreamError(status={self.status}, node={self.node!r}, "
            f"retry_after={self.retry_after!r}, detail={self.detail!r})"
        )


class FleetConfigError(ValueError):
    """The fleet configuration (environment or fleet file) is not usable."""
