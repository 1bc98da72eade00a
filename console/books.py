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

Bookings. A finished call is queued (`book`) and a database thread writes the queue
every `GATEWAY_BOOK_SECONDS` in one transaction: the usage records, the charges (from the
lease: one release of the total and one charge per call in the ledger), the month's
spend and the daily rollups. A worker that is stopped writes its queue and gives its
leases back first; one that is killed loses the bookings of its last moments, and its
leases are released by `releaseholds` as stale holds, so nothing is charged for them.
"""

import atexit
import logging
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from console import alerts, db, ledger, pricing
from console.models import BillingAccount
from console.usage import book as book_one
from console.usage import call_cost, write_records

logger = logging.getLogger(__name__)

LEASE_IDLE = 2.0
LEASE_MAX_AGE = 30.0
LEASE_SHARE = 10  # a lease grows by 1/LEASE_SHARE of the balance when it can
LEASE_PREFIX = "lease_"  # the request id of a lease's hold and ledger entries


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


_lock = threading.Lock()  # guards the leases' numbers and the queue
_grow_lock = threading.Lock()  # one lease change in the database at a time
_leases: dict[tuple[int, str], Lease] = {}  # the lease calls take from, per workspace and month
_retired: list[Lease] = []  # given back once the calls using them are written
_queue: list[Booking] = []
_wake = threading.Event()
_timer: threading.Thread | None = None
_stopping = threading.Event()
_asleep = False


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
    with _lock:
        _queue.append(booking)
        wake = _asleep
    if wait:
        db.submit(flush)
    else:
        _start_timer()
        if wake:
            _wake.set()
    return booking.done


# The database thread ---------------------------------------------------------------


def flush(*, give_back: bool = False) -> None:
    """Write the queued bookings and give back idle leases (all unused ones with `give_back`)."""
    pricing.refresh()  # keeps the prices fresh for the call's path
    with _lock:
        batch = _queue[:]
        del _queue[:]
    if batch:
        _write(batch)
    _tend(give_back=give_back)


def _write(batch: list[Booking]) -> None:
    try:
        with transaction.atomic():
            settled = _write_all(batch)
    except Exception:
        logger.exception("could not book %d calls together; booking them one by one", len(batch))
        settled = []
        for booking in batch:
            try:
                with transaction.atomic():
                    settled.extend(_write_all([booking]))
            except Exception:
                logger.exception("could not book the call %s", booking.fields["request_id"])
                settled.append((booking, 0))
    with _lock:
        for booking, charge in settled:
            lease = booking.held.lease if booking.held else None
            if isinstance(lease, Lease):
                lease.in_use -= booking.held.amount
                lease.amount -= charge
    for booking in batch:
        if booking.done is not None and not booking.done.done():
            booking.done.set_result(None)


def _write_all(batch: list[Booking]) -> list[tuple[Booking, int]]:
    """Book a batch in the current transaction; (booking, what its lease was charged)."""
    settled: list[tuple[Booking, int]] = []
    by_lease: dict[Lease, list[tuple[Booking, int]]] = {}
    for booking in batch:
        lease = booking.held.lease if booking.held else None
        if not isinstance(lease, Lease):
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
        by_lease.setdefault(lease, []).append((booking, charge))
    records = []
    for lease, charged in by_lease.items():
        ledger.charge_lease(
            workspace_id=lease.workspace_id,
            lease_id=lease.request_id,
            month=lease.month,
            charges=[(b.fields["request_id"], b.held.api_key_id, c) for b, c in charged],
        )
        for booking, charge in charged:
            records.append(booking.fields | {"cost": charge})
        settled.extend(charged)
        if lease.monthly_limit and any(c for _, c in charged):
            alerts.check(workspace_id=lease.workspace_id, api_key_id=None)
    if records:
        write_records(records)
    return settled


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


def drain() -> None:
    """Write everything queued and give back every unused lease, and wait."""
    db.submit(flush, give_back=True).result()


# The timer -------------------------------------------------------------------------


def _pending() -> bool:
    """Whether there is anything to write or give back (with `_lock` held)."""
    return bool(_queue or _leases or _retired)


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
    """Flush on a database thread every GATEWAY_BOOK_SECONDS while there is work; asleep
    (until the next booking wakes it) while there is none."""
    global _asleep
    while not _stopping.is_set():
        with _lock:
            _asleep = not _pending()
        if _asleep:
            _wake.wait()
        else:
            _wake.wait(settings.GATEWAY_BOOK_SECONDS)
        _wake.clear()
        if _stopping.is_set():
            return
        try:
            db.submit(flush).result()
        except RuntimeError:
            return  # the interpreter is shutting down: the exit handler writes the rest
        except Exception:
            logger.exception("booking calls failed")


def stop() -> None:
    """Write everything, give the leases back and stop the timer (tests, before the database goes)."""
    global _timer
    _stopping.set()
    _wake.set()
    if _timer is not None:
        _timer.join(timeout=5)
    flush(give_back=True)
    _timer = None
    _stopping.clear()


def forget() -> None:
    """Drop what is queued and the leases, unwritten (tests: the database is rolled back)."""
    with _lock:
        batch = _queue[:]
        del _queue[:]
        _leases.clear()
        _retired.clear()
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
            flush(give_back=True)
        except Exception:
            logger.exception("could not write the books at exit")
