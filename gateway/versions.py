"""API versions in the URL path (seed 000): current, deprecated with headers, or gone."""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from email.utils import format_datetime

from django.conf import settings

from gateway.errors import ApiError

# A path may hold any character once decoded (a newline too, from %0A).
_VERSIONED = re.compile(r"^/(v[0-9]+)(/.*)?\Z", re.DOTALL)
# First path segments that are API endpoints called without a version.
_UNVERSIONED = frozenset(
    {
        "chat", "responses", "models", "embeddings", "images", "audio", "realtime", "music",
        "video", "vision", "messages", "extras", "api-keys", "billing", "usage", "openapi.json",
        "image", "upload", "files", "fetch",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Version:
    name: str
    serves: str
    deprecated: date | None = None
    sunset: date | None = None
    link: str = ""


def is_api_path(path: str) -> bool:
    if _VERSIONED.match(path):
        return True
    return path.strip("/").split("/", 1)[0] in _UNVERSIONED


def _http_date(day: date) -> str:
    return format_datetime(datetime.combine(day, time(0), tzinfo=UTC), usegmt=True)


_configured: tuple[object, dict[str, Version]] = (None, {})


def configured() -> dict[str, Version]:
    """The versions in settings.API_VERSIONS, built again only when that setting changes."""
    global _configured
    specs = settings.API_VERSIONS
    if _configured[0] is specs:
        return _configured[1]
    versions = {}
    for name, spec in specs.items():
        versions[name] = Version(
            name=name,
            serves=spec.get("serves", name),
            deprecated=spec.get("deprecated"),
            sunset=spec.get("sunset"),
            link=spec.get("link", ""),
        )
    _configured = (specs, versions)
    return versions


def resolve(path: str, *, today: date | None = None) -> tuple[Version, str]:
    """The version a path asks for and the path as the current code serves it.

    Raises ApiError: 404 without a version or with an unknown one, 410 after a sunset.
    """
    match = _VERSIONED.match(path)
    if not match:
        raise ApiError(
            404,
            f"An API version is required in the path, e.g. /v1{path}. Requests without a version are not supported.",
            code="version_required",
        )
    name, rest = match.group(1), match.group(2) or "/"
    version = configured().get(name)
    if version is None:
        known = ", ".join(sorted(configured()))
        raise ApiError(
            404, f"Unknown API version {name}. Available: {known}.", code="unknown_version"
        )
    today = today or datetime.now(UTC).date()
    if version.sunset and today >= version.sunset:
        raise ApiError(
            410,
            f"API version {name} was removed on {version.sunset.isoformat()}. Use {current_name()} instead.",
            code="version_gone",
        )
    return version, f"/{version.serves}{rest}"


def current_name() -> str:
    return next((v.name for v in configured().values() if not v.deprecated), "v1")


def deprecation_headers(version: Version) -> dict[str, str]:
    if not version.deprecated:
        return {}
    headers = {"Deprecation": _http_date(version.deprecated)}
    if version.sunset:
        headers["Sunset"] = _http_date(version.sunset)
    if version.link:
        headers["Link"] = f'<{version.link}>; rel="deprecation"'
    return headers
