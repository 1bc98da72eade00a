"""A worker's books: credit held in leases, and finished calls booked in batches.

Two pieces of database work would otherwise sit on the path of every model call:
holding its worst-case cost before it goes upstream, and booking it (usage record,
charge, rollups) before the caller gets the answer. Here both happen in memory on the
call's path, and in the database in the background.

Leases. A worker holds credit for a workspace in one database hold, a lease, taken
from the balance and the month's budget like any other hold (`ledger.grow_lease`),
and sets each call's worst case aside from it in memory. When a call needs more than
the lease has free, the lease grows in the database on that call's path, by a tenth of
the balance when it can and by what the call needs when that is all there is, so a
worker never sets aside more than the balance allowed: the balance stays exact and
never goes below zero, and within one worker the last cent can be spent. A lease
unused for `LEASE_IDLE` seconds, or older than `LEASE_MAX_AGE`, is given back as soon
as no call is using it, and a lease taken before the workspace's monthly limit changed
is used no further (the background writer checks every time it runs). With several
workers, another worker's lease may hold credit that this one cannot use until it is
given back: near the end of a balance, a call can be refused for that long.

Calls on a key with a monthly budget hold in the database per call (`ledger.hold`),
so that the key's budget is exact.

Bookings. A finished call is queued (`book`) and appended to this worker's journal
(console.journal) before its caller gets the answer's last byte. A database thread
writes the queue every `GATEWAY_BOOK_SECONDS` in one transaction: the usage records,
the charges (from the lease: one release of the total and one charge per call in the
ledger), the month's spend and the daily rollups; then the journal's segment of that
batch is discarded. A batch that fails is written call by call, and a call that fails
stays queued and journaled, and is tried again (after a pause that grows while the
database keeps failing). A worker that is stopped writes its queue and gives its
leases back first. One that is killed keeps its journal: the next worker to start on
the machine, or any worker within `RECLAIM_SECONDS`, books what it holds and returns
its leases (console.recovery); on other machines, its holds are returned once it has
not been seen for `workers.GONE_SECONDS`.
"""

import atexit
import json
import logging
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.conf import settings
from django.db import connection, connections, transaction

from console import alerts, db, ledger, pricing, workers
from console.journal import journal
from console.models import BillingAccount
from console.usage import book as book_one
from console.usage import call_cost, write_records

logger = logging.getLogger(__name__)

LEASE_IDLE = 2.0
LEASE_MAX_AGE = 30.0
LEASE_SHARE = 10  # a lease grows by 1/LEASE_SHARE of the balance when it can
LEASE_PREFIX = "lease_"  # the request id of a lease's hold and ledger entries
RECLAIM_SECONDS = 10.0  # how often a worker looks for what gone workers left
RETRY_MAX_SECONDS = 30.0  # the longest pause before a failed write is tried again
# Journal lines; dates and ids as text. Made once: `json.dumps` with options makes one a call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str, check_circular=False)


@dataclass(eq=False)
class Lease:
    """Credit this worker holds for a workspace, and how much of it calls are using."""

    workspace_id: int
    month: str
    request_id: str = field(default_factory=lambda: f"{LEASE_PREFIX}{uuid.uuid4().hex}")
    amount: int = 0  # held in the database
    in_use: int = 0  # set aside for calls not yet written
    monthly_limit: int | None = None
    created: float = field(default_factory=time.monotonic)
    used: float = field(default_factory=time.monotonic)
    in_database: bool = False

    @property
    def free(self) -> int:
        return self.amount - self.in_use


@dataclass
class Booking:
    """A finished call, waiting to be written."""

    fields: dict
    held: ledger.Held | None
    variant: str = ""
    key_budget: int | None = None
    done: Future | None = None
    attempts: int = 0  # failed writes so far (a replayed call may have been written)

    def line(self) -> bytes:
        """The booking as a line of the journal."""
        held = self.held
        entry = {
            "fields": self.fields,
            "held": None
            if held is None
            else {
                "request_id": held.request_id,
                "workspace_id": held.workspace_id,
                "api_key_id": held.api_key_id,
                "amount": held.amount,
                "month": held.month,
                "monthly_limit": held.monthly_limit,
                "lease": lease_id(held),
            },
            "variant": self.variant,
            "key_budget": self.key_budget,
        }
        return _ENCODER.encode(entry).encode() + b"\n"

    @classmethod
    def from_line(cls, entry: dict) -> "Booking":
        """A booking read back from a journal, to be written if it was not."""
        fields = entry["fields"]
        fields["created_at"] = datetime.fromisoformat(fields["created_at"])
        held = ledger.Held(**entry["held"]) if entry["held"] else None
        return cls(
            fields=fields,
            held=held,
            variant=entry["variant"],
            key_budget=entry["key_budget"],
            attempts=1,
        )


def lease_id(held: ledger.Held) -> str | None:
    """The request id of the lease a call was set aside from (None: held on its own)."""
    lease = held.lease
    if lease is None:
        return None
    return lease.request_id if isinstance(lease, Lease) else str(lease)


_lock = threading.Lock()  # guards the leases' numbers and the queue
_grow_lock = threading.Lock()  # one lease change in the database at a time
_leases: dict[tuple[int, str], Lease] = {}  # the lease calls take from, per workspace and month
_retired: list[Lease] = []  # given back once the calls using them are written
_queue: list[Booking] = []
_wake = threading.Event()
_timer: threading.Thread | None = None
_stopping = threading.Event()
_asleep = False
_failures = 0  # flushes in a row that could not write everything
_retry_at = 0.0  # no flush by the timer before this moment (time.monotonic)


# The call's path -------------------------------------------------------------------


def hold_now(
    *,
    workspace_id: int,
    api_key_id: str | None,
    key_budget: int | None,
    amount: int,
    request_id: str,
) -> ledger.Held | None:
    """Set `amount` aside from this worker's lease, in memory; None when that cannot be
    done (no lease or not enough in it, or a key with a budget): `hold()` then can."""
    if key_budget is not None:
        return None
    lease, _free = _take(workspace_id, ledger.month_of(), amount)
    return _held(lease, request_id, api_key_id, amount) if lease else None


def hold(
    *,
    workspace_id: int,
    api_key_id: str | None,
    key_budget: int | None,
    amount: int,
    request_id: str,
) -> ledger.Held:
    """Set `amount` aside, growing the lease in the database if need be (database thread).

    Raises ledger.PaymentRequired when the balance or the month's limit cannot cover it.
    """
    workers.beat()  # the holds it takes name this worker: it must be seen alive
    if key_budget is not None:
        return ledger.hold(
            workspace_id=workspace_id,
            api_key_id=api_key_id,
            key_budget=key_budget,
            amount=amount,
            request_id=request_id,
        )
    month = ledger.month_of()
    with _grow_lock:
        while True:
            taken, free = _take(workspace_id, month, amount)
            if taken:
                return _held(taken, request_id, api_key_id, amount)
            with _lock:
                lease = _leases.get((workspace_id, month)) or Lease(
                    workspace_id=workspace_id, month=month
                )
            balance = ledger.account_for(workspace_id).balance
            try:
                grown, limit = ledger.grow_lease(
                    workspace_id=workspace_id,
                    lease_id=lease.request_id,
                    month=month,
                    need=amount - free,
                    want=balance // LEASE_SHARE,
                    new=not lease.in_database,
                )
            except ledger.LeaseLost:
                # Released as stale under a live worker (it should not be): start afresh.
                with _lock:
                    _leases.pop((workspace_id, month), None)
                continue
            with _lock:
                lease.amount += grown
                lease.monthly_limit = limit
                lease.in_database = True
                _leases[(workspace_id, month)] = lease


def extend(*, held: ledger.Held, amount: int, key_budget: int | None) -> ledger.Held:
    """Set `amount` more aside for a call that runs on (a realtime session), from the
    lease it holds from, grown in the database if need be, or from the balance for a
    call that holds on its own (database thread); the call's hold as it now is.

    Raises ledger.PaymentRequired when the balance or a monthly limit cannot cover it.
    """
    lease = held.lease
    if not isinstance(lease, Lease):
        return ledger.extend_hold(held=held, amount=amount, key_budget=key_budget)
    workers.beat()
    with _grow_lock:
        while True:
            with _lock:
                if lease.free >= amount:
                    lease.in_use += amount
                    lease.used = time.monotonic()
                    return replace(held, amount=held.amount + amount)
                free = lease.free
            balance = ledger.account_for(held.workspace_id).balance
            try:
                grown, limit = ledger.grow_lease(
                    workspace_id=held.workspace_id,
                    lease_id=lease.request_id,
                    month=lease.month,
                    need=amount - free,
                    want=balance // LEASE_SHARE,
                    new=False,
                )
            except ledger.LeaseLost:
                raise ledger.PaymentRequired("The credit this call held was returned.") from None
            with _lock:
                lease.amount += grown
                lease.monthly_limit = limit


def _take(workspace_id: int, month: str, amount: int) -> tuple[Lease | None, int]:
    """(the lease `amount` was set aside from, or None; what the lease has free otherwise)."""
    with _lock:
        lease = _leases.get((workspace_id, month))
        if lease is None:
            return None, 0
        if lease.free < amount:
            return None, lease.free
        lease.in_use += amount
        lease.used = time.monotonic()
        return lease, 0


def _held(lease: Lease, request_id: str, api_key_id: str | None, amount: int) -> ledger.Held:
    return ledger.Held(
        request_id=request_id,
        workspace_id=lease.workspace_id,
        api_key_id=str(api_key_id) if api_key_id else None,
        amount=amount,
        month=lease.month,
        monthly_limit=lease.monthly_limit,
        lease=lease,
    )


def book(booking: Booking, *, wait: bool = False) -> Future | None:
    """Queue a finished call for writing; with `wait`, a future done once it is written."""
    if wait:
        booking.done = Future()
    line = booking.line()
    with _lock:
        _journal(line)
        _queue.append(booking)
        wake = _asleep
    if wait:
        db.submit(flush)
    else:
        _start_timer()
        if wake:
            _wake.set()
    return booking.done


def _journal(line: bytes) -> None:
    """Append a booking to the journal (with `_lock` held). A journal that cannot be
    written (a full disk) does not stop the call: it is still queued, and written unless
    this worker dies first."""
    try:
        journal().append(line)
    except OSError:
        logger.exception("could not journal a booking; it is kept in memory until written")


# The database thread ---------------------------------------------------------------


def flush(*, give_back: bool = False) -> bool:
    """Write the queued bookings and give back idle leases (all unused ones with
    `give_back`); whether everything queued was written."""
    global _failures, _retry_at
    pricing.refresh()  # keeps the prices fresh for the call's path
    with _lock:
        batch = _queue[:]
        del _queue[:]
        segment = journal().rotate() if batch else None
    try:
        failed = _write(batch) if batch else []
    except Exception:
        logger.exception("could not book %d calls", len(batch))
        failed = batch
    with _lock:
        for booking in failed:
            booking.attempts += 1
            _journal(booking.line())  # kept in the segment after this batch's
        _queue[:0] = failed
    if segment is not None:
        journal().discard(segment)
    if failed:
        _failures += 1
        _retry_at = time.monotonic() + min(RETRY_MAX_SECONDS, 0.25 * 2**_failures)
        logger.error(
            "could not book %d calls; they stay journaled and are tried again", len(failed)
        )
    else:
        _failures = 0
    _tend(give_back=give_back)
    return not failed


def _write(batch: list[Booking]) -> list[Booking]:
    """Write a batch (call by call when it fails as a whole); the bookings that failed."""
    batch, written = _unwritten(batch)
    failed: list[Booking] = []
    try:
        with transaction.atomic():
            settled = _write_all(batch)
    except Exception:
        logger.exception("could not book %d calls together; booking them one by one", len(batch))
        _replace_broken_connection()
        settled = []
        for booking in batch:
            try:
                with transaction.atomic():
                    settled.extend(_write_all([booking]))
            except Exception:
                logger.exception("could not book the call %s", booking.fields["request_id"])
                _replace_broken_connection()
                failed.append(booking)
    with _lock:
        for booking, charge in settled + [(b, 0) for b in written]:
            lease = booking.held.lease if booking.held else None
            if isinstance(lease, Lease):
                lease.in_use -= booking.held.amount
                lease.amount -= charge
    for booking in batch + written:
        if booking.done is not None and not booking.done.done():
            booking.done.set_result(None)
    return failed


def write_replayed(bookings: list[Booking]) -> list[Booking]:
    """Write bookings read back from a gone worker's journal; the ones that failed."""
    failed = []
    for start in range(0, len(bookings), 500):
        failed += _write(bookings[start : start + 500])
    return failed


def _unwritten(batch: list[Booking]) -> tuple[list[Booking], list[Booking]]:
    """(the calls of the batch to write, those booked already): a write that failed may
    have been committed after all, and a replayed journal may hold calls written before."""
    retried = [b.fields["request_id"] for b in batch if b.attempts]
    if not retried:
        return batch, []
    from console.models import UsageRecord

    written = set()
    for start in range(0, len(retried), 500):
        written.update(
            UsageRecord.objects.filter(request_id__in=retried[start : start + 500]).values_list(
                "request_id", flat=True
            )
        )
    if not written:
        return batch, []
    return (
        [b for b in batch if b.fields["request_id"] not in written],
        [b for b in batch if b.fields["request_id"] in written],
    )


def _replace_broken_connection() -> None:
    """After a failed write: a broken connection is replaced before the next one."""
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()


def _write_all(batch: list[Booking]) -> list[tuple[Booking, int]]:
    """Book a batch in the current transaction; (booking, what its lease was charged)."""
    settled: list[tuple[Booking, int]] = []
    by_lease: dict[tuple[int, str, str], list[tuple[Booking, int]]] = {}
    for booking in batch:
        lease = lease_id(booking.held) if booking.held else None
        if lease is None:
            book_one(
                variant=booking.variant,
                held=booking.held,
                key_budget=booking.key_budget,
                **booking.fields,
            )
            settled.append((booking, 0))
            continue
        charge = ledger.chargeable(
            booking.fields["request_id"],
            call_cost(booking.fields, booking.variant),
            booking.held.amount,
        )
        held = booking.held
        by_lease.setdefault((held.workspace_id, lease, held.month), []).append((booking, charge))
    records = []
    for (workspace_id, lease, month), charged in by_lease.items():
        charges = [(b.fields["request_id"], b.held.api_key_id, c) for b, c in charged]
        try:
            ledger.charge_lease(
                workspace_id=workspace_id, lease_id=lease, month=month, charges=charges
            )
        except ledger.LeaseLost:
            # Returned as a gone worker's while this one lived (or before its journal
            # was replayed): the calls are charged from the balance instead.
            _lost(lease)
            late = ledger.charge_late(workspace_id=workspace_id, month=month, charges=charges)
            charged = [(booking, 0) for booking, _ in charged]
            records.extend(b.fields | {"cost": c} for (b, _), c in zip(charged, late, strict=True))
            settled.extend(charged)
            continue
        for booking, charge in charged:
            records.append(booking.fields | {"cost": charge})
        settled.extend(charged)
        if charged[0][0].held.monthly_limit and any(c for _, c in charged):
            alerts.check(workspace_id=workspace_id, api_key_id=None)
    if records:
        write_records(records)
    return settled


def _lost(request_id: str) -> None:
    """A lease whose hold is gone from the database is used no further."""
    with _lock:
        for key, lease in list(_leases.items()):
            if lease.request_id == request_id:
                del _leases[key]
                lease.in_database = False


def _tend(*, give_back: bool) -> None:
    """Give back the leases no call is using that are idle, old, or of a past month."""
    if not _grow_lock.acquire(blocking=give_back):
        return  # a lease is growing: tend them next time
    try:
        _give_back(give_back=give_back)
    finally:
        _grow_lock.release()


def _give_back(*, give_back: bool) -> None:
    now = time.monotonic()
    month = ledger.month_of()
    with _lock:
        workspace_ids = {workspace_id for workspace_id, _ in _leases}
    limits = _monthly_limits(workspace_ids)
    done = []
    with _lock:
        for key, lease in list(_leases.items()):
            idle = now - lease.used > LEASE_IDLE
            old = now - lease.created > LEASE_MAX_AGE or lease.month != month
            # A limit set or changed since the lease was taken applies to new calls at once.
            changed = limits.get(lease.workspace_id) != lease.monthly_limit
            if lease.in_use == 0 and (give_back or idle or old or changed):
                del _leases[key]
                done.append(lease)
            elif old or changed:
                del _leases[key]
                _retired.append(lease)
        for lease in _retired[:]:
            if lease.in_use == 0:
                _retired.remove(lease)
                done.append(lease)
    for lease in done:
        if lease.in_database:
            ledger.settle(request_id=lease.request_id, cost=0)


def _monthly_limits(workspace_ids: set[int]) -> dict[int, int | None]:
    if not workspace_ids:
        return {}
    ids = list(workspace_ids)
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT workspace_id, monthly_limit FROM {BillingAccount._meta.db_table} "
            f"WHERE workspace_id IN ({marks})",
            ids,
        )
        return dict(cursor.fetchall())


def backlog() -> tuple[int, float | None]:
    """(bookings queued and not yet written, when the oldest was answered as a
    `time.time()`, or None): what /metrics reports as the queue and the journal's lag."""
    with _lock:
        if not _queue:
            return 0, None
        return len(_queue), _queue[0].fields["created_at"].timestamp()


def drain() -> None:
    """Write everything queued and give back every unused lease, and wait."""
    db.submit(flush, give_back=True).result()


# The timer -------------------------------------------------------------------------


def _pending() -> bool:
    """Whether there is anything to write or give back (with `_lock` held)."""
    return bool(_queue or _leases or _retired)


def start() -> None:
    """Start the background writer of a serving worker (when bookings are written in the
    background at all): it first books and returns what gone workers left."""
    if settings.GATEWAY_BOOK_SECONDS:
        _start_timer()


def _start_timer() -> None:
    global _timer
    if _timer is not None or not settings.GATEWAY_BOOK_SECONDS:
        return
    with _lock:
        if _timer is not None:
            return
        _timer = threading.Thread(target=_tick, name="console-books", daemon=True)
        _timer.start()


def _tick() -> None:
    """Flush on a database thread every GATEWAY_BOOK_SECONDS while there is work (less
    often while writes keep failing); between, say this worker is alive and look for
    what gone workers left, every few seconds."""
    global _asleep
    from console import recovery

    reclaimed = beaten = 0.0
    while not _stopping.is_set():
        now = time.monotonic()
        try:  # on the database thread, but only when due: each hop costs the calls a little
            if now - reclaimed >= RECLAIM_SECONDS:
                reclaimed = now
                db.submit(recovery.reclaim).result()
            if now - beaten >= workers.BEAT_SECONDS:
                beaten = now
                db.submit(workers.beat, force=True).result()
        except RuntimeError:
            return  # the interpreter is shutting down: the exit handler writes the rest
        except Exception:
            logger.exception("could not look for what gone workers left")
        with _lock:
            _asleep = not _pending()
        if _asleep:
            _wake.wait(workers.BEAT_SECONDS)
        else:
            _wake.wait(max(settings.GATEWAY_BOOK_SECONDS, _retry_at - time.monotonic()))
        _wake.clear()
        if _stopping.is_set():
            return
        with _lock:
            pending = _pending()  # the wait above kept to the pause after a failed write
        if not pending:
            continue
        try:
            db.submit(flush).result()
        except RuntimeError:
            return
        except Exception:
            logger.exception("booking calls failed")


def _finish() -> None:
    """Write everything and give the leases back; with nothing left unwritten, the
    journal is discarded and this worker owns nothing any more."""
    if flush(give_back=True):
        with _lock:
            written = not _queue
        if written:
            journal().discard_all()
            workers.leave()


def stop() -> None:
    """Write everything, give the leases back and stop the timer (tests, before the database goes)."""
    global _timer
    _stopping.set()
    _wake.set()
    if _timer is not None:
        _timer.join(timeout=5)
    _finish()
    _timer = None
    _stopping.clear()


def forget() -> None:
    """Drop what is queued, the leases and the journal, unwritten (tests: the database is
    rolled back)."""
    global _failures, _retry_at
    with _lock:
        batch = _queue[:]
        del _queue[:]
        _leases.clear()
        _retired.clear()
        journal().discard_all()
        _failures, _retry_at = 0, 0.0
    for booking in batch:
        if booking.done is not None and not booking.done.done():
            booking.done.set_result(None)


@atexit.register
def _at_exit() -> None:
    """A stopping worker writes what it has queued and gives its leases back."""
    with _lock:
        pending = _pending()
    if pending and settings.configured:
        try:
            _finish()
        except Exception:
            logger.exception("could not write the books at exit")
