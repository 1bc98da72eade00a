"""A worker's journal of answered calls: no booking is lost when the worker dies.

Each finished call is appended to this worker's journal (one line of JSON, one write to
the operating system) before its caller gets the answer's last byte, and stays there
until the batch it belongs to is committed to the database. A worker killed with SIGKILL
loses its memory, not what it wrote here: the operating system keeps the file, and the
next worker on this machine replays it (console.recovery). A machine that loses power
keeps what the operating system had written to disk; what was still in its page cache,
at most the calls of the last moments before the batch was committed, is lost.

Files: `<GATEWAY_JOURNAL_DIR>/<worker id>.<n>.journal`, one segment per batch. A live
worker holds an exclusive lock (flock) on each of its segments, so a segment whose lock
can be taken belongs to a worker that is gone. The directory belongs to one database
and one machine (a local disk, not a shared one).
"""

import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from console import workers

logger = logging.getLogger(__name__)

SUFFIX = ".journal"


@dataclass(eq=False)
class Segment:
    path: Path
    fd: int
    lines: int = 0


class Journal:
    """This worker's segments: the current one appended to, older ones awaiting their batch."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.current: Segment | None = None
        self.older: list[Segment] = []
        self.count = 0

    def append(self, line: bytes) -> None:
        if self.current is None:
            self.current = self._open()
        written = os.write(self.current.fd, line)
        if written != len(line):  # a full disk: say so loudly, the call is still queued
            raise OSError(f"the journal took {written} of {len(line)} bytes")
        self.current.lines += 1

    def rotate(self) -> Segment | None:
        """Start a new segment for what comes next; the one to discard once its batch is written."""
        segment, self.current = self.current, None
        if segment is not None:
            self.older.append(segment)
        return segment

    def discard(self, segment: Segment) -> None:
        if segment in self.older:
            self.older.remove(segment)
        _remove(segment)

    def discard_all(self) -> None:
        for segment in [*self.older, *([self.current] if self.current else [])]:
            _remove(segment)
        self.older, self.current = [], None

    def _open(self) -> Segment:
        directory = Path(settings.GATEWAY_JOURNAL_DIR)
        directory.mkdir(parents=True, exist_ok=True)
        self.count += 1
        path = directory / f"{workers.current()}.{self.count}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return Segment(path, fd)


def remove(segment: Segment) -> None:
    """Remove a segment's file (its lock is released when it is closed)."""
    segment.path.unlink(missing_ok=True)


def release(segment: Segment) -> None:
    os.close(segment.fd)


def _remove(segment: Segment) -> None:
    try:
        remove(segment)
    finally:
        release(segment)


_journal: Journal | None = None


def journal() -> Journal:
    """This process's journal (a forked child starts a journal of its own)."""
    global _journal
    if _journal is None or _journal.pid != os.getpid():
        _journal = Journal()
    return _journal


def owner_of(path: Path) -> str:
    return path.name.rsplit(".", 2)[0]


def segments() -> list[Path]:
    """The journal's segments on this machine, every worker's, oldest first."""
    directory = Path(settings.GATEWAY_JOURNAL_DIR)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.glob(f"*{SUFFIX}"):
        try:
            found.append((path.stat().st_mtime, path))
        except FileNotFoundError:  # discarded since it was listed
            continue
    return [path for _, path in sorted(found)]


def claim(path: Path) -> Segment | None:
    """The segment of a worker that is gone, locked for replaying; None when its worker
    is alive (or another worker is replaying it, or it is gone already)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if os.fstat(fd).st_nlink == 0:  # replayed and removed while we waited for it
        os.close(fd)
        return None
    return Segment(path, fd)


def is_alive(owner: str) -> bool:
    """Whether a worker on this machine that has a journal here still holds it."""
    for path in segments():
        if owner_of(path) == owner:
            segment = claim(path)
            if segment is None:
                return True
            os.close(segment.fd)
    return False


def read(segment: Segment) -> list[dict]:
    """The bookings in a segment; a line cut short (the machine stopped mid-write) is skipped."""
    with os.fdopen(os.dup(segment.fd), "rb") as file:
        data = file.read()
    entries = []
    for number, line in enumerate(data.splitlines(), 1):
        try:
            entries.append(json.loads(line))
        except ValueError:
            logger.warning("skipping line %d of %s: not a whole entry", number, segment.path.name)
    return entries
