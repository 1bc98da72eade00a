"""What gone workers left: their answered calls booked, their holds returned.

A worker killed mid-flight leaves two things behind: the bookings in its journal
(calls it answered but had not written yet) and its holds in the database (its leases
of credit, and the holds of calls it never answered). `reclaim()` runs when a worker
starts and every `books.RECLAIM_SECONDS` after:

1. Each journal on this machine whose lock is free belongs to a worker that is gone:
   its calls are booked (those not written before), charged from their lease or held
   amount while it is still held, and from the balance when it is not; then the
   worker's holds are released and the journal removed.
2. The holds of a worker not seen for `workers.GONE_SECONDS` (on another machine, or
   one that left no journal) are released: its calls were charged already, or will be
   from the balance when its machine replays its journal.

Both are safe to run on several workers at once: a journal is replayed under its lock,
a call is booked once (its usage record is unique), and a hold released once.
"""

import logging

from django.db.models import Q

from console import books, journal, ledger, workers
from console.models import Hold, Worker

logger = logging.getLogger(__name__)


def reclaim() -> None:
    """Book and return what gone workers left (on a database thread)."""
    me = workers.current()
    gone: dict[str, list[journal.Segment]] = {}
    for path in journal.segments():
        owner = journal.owner_of(path)
        if owner == me:
            continue
        segment = journal.claim(path)
        if segment is not None:
            gone.setdefault(owner, []).append(segment)
    for owner, segments in gone.items():
        try:
            replay(owner, segments)
        finally:
            for segment in segments:
                journal.release(segment)
    _release_unseen(me)


def replay(owner: str, segments: list[journal.Segment]) -> None:
    """Book a gone worker's journaled calls, return its holds, remove its journal."""
    seen: set[str] = set()
    bookings = []
    for segment in segments:
        for entry in journal.read(segment):
            booking = books.Booking.from_line(entry)
            if booking.fields["request_id"] not in seen:
                seen.add(booking.fields["request_id"])
                bookings.append(booking)
    failed = books.write_replayed(bookings)
    if failed:
        logger.error(
            "could not book %d calls of the gone worker %s; its journal is kept", len(failed), owner
        )
        return
    released = ledger.release_owned(owner)
    Worker.objects.filter(pk=owner).delete()
    for segment in segments:
        journal.remove(segment)
    logger.warning(
        "booked %d calls and returned %d holds of the gone worker %s",
        len(bookings),
        released,
        owner,
    )


def _release_unseen(me: str) -> None:
    """Return the holds of workers not seen for a while, unless their journal here says
    they live."""
    unseen = set(
        Worker.objects.filter(seen_at__lt=workers.gone_before()).values_list("pk", flat=True)
    )
    # Holds whose worker never beat, or whose row was removed: old enough to be its.
    known = Worker.objects.values("pk")
    unseen |= set(
        Hold.objects.filter(created_at__lt=workers.gone_before())
        .exclude(Q(owner="") | Q(owner__in=known))
        .values_list("owner", flat=True)
        .distinct()
    )
    for owner in unseen - {me}:
        if journal.is_alive(owner):
            continue
        released = ledger.release_owned(owner)
        Worker.objects.filter(pk=owner).delete()
        if released:
            logger.warning(
                "returned %d holds of the worker %s, not seen for a while", released, owner
            )
