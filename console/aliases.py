"""Model aliases: the model names clients ask for, and the model of the fleet that serves them.

A coding agent sends the names it knows (`claude-sonnet-4-5-20250929`, `gpt-5.1-codex`);
a workspace maps them to a Mira model with patterns: an exact name, a `provider/model`
id, or a glob with `*` and `?`. An exact name wins over a glob, and among globs the
longest pattern (the most specific) wins. The fleet file may carry aliases for every
workspace too; the gateway looks at the workspace's first (gateway.http).

Every /v1 call looks its workspace's aliases up, so they are cached in this process:
with `REDIS_URL` each worker asks Redis for the workspace's alias version at most every
`LOCAL_SECONDS` (answering from its copy meanwhile, and while a fresh one is fetched
up to `LOCAL_STALE_SECONDS`); a change writes a new version once it is committed, so it
takes effect on every worker within a second. Without Redis the console is one process,
whose copy is dropped on the change itself. A workspace without aliases costs a lookup
in a dict, never a query.
"""

import asyncio
import fnmatch
import logging
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import redis
from django.conf import settings
from django.db import transaction

from accounts.models import User, Workspace
from console import db
from console.actions import audit
from console.models import ModelAlias
from console.shared import (
    ERRORS,
    RETRY_SECONDS,
    redis_answered,
    redis_client,
    redis_failed,
    sync_redis_client,
)

logger = logging.getLogger(__name__)

PATTERN = re.compile(r"[A-Za-z0-9._:/@*?-]+")
MAX_LENGTH = 128
LOCAL_SECONDS = 0.4
LOCAL_STALE_SECONDS = 0.8
VERSION_SECONDS = 7 * 24 * 3600


def is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


@dataclass(frozen=True)
class Aliases:
    """One set of aliases, ready to match: exact names in a dict, globs longest first."""

    exact: Mapping[str, str]
    globs: tuple[tuple[str, re.Pattern, str], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[str, str]) -> "Aliases":
        exact = {p: t for p, t in mapping.items() if not is_glob(p)}
        globs = sorted((p, t) for p, t in mapping.items() if is_glob(p))
        globs.sort(key=lambda item: -len(item[0]))  # stable: equal lengths stay by name
        compiled = tuple((p, re.compile(fnmatch.translate(p)), t) for p, t in globs)
        return cls(exact=exact, globs=compiled)

    def __bool__(self) -> bool:
        return bool(self.exact or self.globs)

    def match(self, name: str) -> str | None:
        """The model an alias serves for `name`, or None when no pattern matches."""
        target = self.exact.get(name)
        if target is not None:
            return target
        for _pattern, regex, target in self.globs:
            if regex.match(name):
                return target
        return None


NONE = Aliases(exact={})


def resolve(name: str, tables: tuple[Aliases, ...], models: frozenset[str]) -> str | None:
    """The model to serve for `name`: None when it is a model of the fleet (never
    aliased) or no alias matches; the first table with a match decides."""
    if name in models:
        return None
    for table in tables:
        target = table.match(name)
        if target is not None:
            return target
    return None


# ---------- the per-process cache ----------

# workspace id: (its aliases, the version they were read at, when that was checked)
_local: dict[int, tuple[Aliases, str | None, float]] = {}
# Without Redis: the version of each workspace's aliases in this (the only) process.
_versions: dict[int, str] = {}
_fetching: dict[tuple[asyncio.AbstractEventLoop, int], asyncio.Task] = {}


def _version_key(workspace_id: int) -> str:
    return f"aliases:version:{workspace_id}"


def fresh(workspace_id: int) -> Aliases | None:
    """The workspace's aliases from this process's copy, when it may be used (on the
    event loop, without waiting); None when they must be read (`for_workspace`)."""
    cached = _local.get(workspace_id)
    if cached is None:
        return None
    table, version, checked = cached
    if not settings.REDIS_URL:
        return table if _versions.get(workspace_id, "") == version else None
    age = time.monotonic() - checked
    if age < LOCAL_SECONDS:
        return table
    if age < LOCAL_STALE_SECONDS:
        _fetch(workspace_id)  # answered from the copy while it is checked
        return table
    return None


async def for_workspace(workspace_id: int) -> Aliases:
    """The workspace's aliases, from this process's copy when it is fresh."""
    table = fresh(workspace_id)
    if table is not None:
        return table
    return await asyncio.shield(_fetch(workspace_id))


def _fetch(workspace_id: int) -> asyncio.Task:
    """The check of a workspace's aliases: one at a time per workspace and event loop."""
    loop = asyncio.get_running_loop()
    pending = (loop, workspace_id)
    task = _fetching.get(pending)
    if task is None:
        task = _fetching[pending] = loop.create_task(_fetch_now(workspace_id))
        task.add_done_callback(lambda done: _fetched(pending, done))
    return task


def _fetched(pending: tuple[asyncio.AbstractEventLoop, int], task: asyncio.Task) -> None:
    _fetching.pop(pending, None)
    if not task.cancelled() and task.exception() is not None:
        logger.error("could not read a workspace's model aliases", exc_info=task.exception())


async def _fetch_now(workspace_id: int) -> Aliases:
    started = time.monotonic()
    # The version is read before the aliases: a change committed in between writes a
    # newer version, so the next check reads the aliases again.
    version = await _current_version(workspace_id)
    cached = _local.get(workspace_id)
    if cached is not None and version is not None and cached[1] == version:
        table = cached[0]
    else:
        table = Aliases.of(await db.run(_read, workspace_id))
    if len(_local) > 10_000:
        _local.clear()
    _local[workspace_id] = (table, version, started)
    return table


def _read(workspace_id: int) -> dict[str, str]:
    return dict(
        ModelAlias.objects.filter(workspace_id=workspace_id).values_list("pattern", "target")
    )


async def _current_version(workspace_id: int) -> str | None:
    """The version of the workspace's aliases; None when Redis cannot tell (read them)."""
    if not settings.REDIS_URL:
        return _versions.get(workspace_id, "")
    client = redis_client()
    if client is None:
        return None
    try:
        version = await client.get(_version_key(workspace_id))
    except ERRORS as exc:
        redis_failed(exc)
        return None
    redis_answered()
    return version or ""


def changed_after_commit(workspace_id: int) -> None:
    """Make every worker read the workspace's aliases again, once the change commits."""
    transaction.on_commit(partial(_changed, workspace_id), robust=True)


def _changed(workspace_id: int) -> None:
    version = secrets.token_hex(8)
    _versions[workspace_id] = version
    _local.pop(workspace_id, None)
    if not settings.REDIS_URL:
        return
    client = sync_redis_client()
    if client is not None:
        try:
            client.set(_version_key(workspace_id), version, ex=VERSION_SECONDS)
        except ERRORS as exc:
            redis_failed(exc)
        else:
            redis_answered()
            return
    threading.Thread(target=_share_later, args=(workspace_id, version), daemon=True).start()


def _share_later(workspace_id: int, version: str) -> None:
    """Write a version Redis could not take at once, as soon as it answers."""
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=RETRY_SECONDS, socket_timeout=RETRY_SECONDS
    )
    while True:
        time.sleep(RETRY_SECONDS / 4)
        try:
            client.set(_version_key(workspace_id), version, ex=VERSION_SECONDS)
        except ERRORS:
            continue
        client.close()
        return


# ---------- changes (each in the audit log) ----------


def problem_with_pattern(pattern: str) -> str | None:
    """Why a pattern cannot be an alias, or None."""
    if not pattern:
        return "Enter the model name clients ask for."
    if len(pattern) > MAX_LENGTH:
        return f"At most {MAX_LENGTH} characters."
    if not PATTERN.fullmatch(pattern):
        return "Use letters, digits, . _ - : / @ and the wildcards * and ?."
    if pattern.strip("*?") == "":
        return "A pattern of wildcards only would alias every model name; name part of it."
    return None


@transaction.atomic
def add_alias(*, workspace: Workspace, pattern: str, target: str, by: User | None) -> ModelAlias:
    alias = ModelAlias.objects.create(workspace=workspace, pattern=pattern, target=target)
    audit(workspace=workspace, actor=by, action="alias.added", pattern=pattern, target=target)
    changed_after_commit(workspace.pk)
    return alias


@transaction.atomic
def delete_alias(*, alias: ModelAlias, by: User | None) -> None:
    workspace = alias.workspace
    audit(
        workspace=workspace, actor=by, action="alias.deleted", pattern=alias.pattern,
        target=alias.target,
    )  # fmt: skip
    alias.delete()
    changed_after_commit(workspace.pk)


def forget_all() -> None:
    """Drop this process's copies (tests, whose database ids come back)."""
    _local.clear()
    _versions.clear()
