"""Fill a workspace with synthetic usage history, for the dashboards and their benchmarks.

Records are inserted in batches of prepared rows (with COPY on PostgreSQL, executemany on
SQLite: the ORM's bulk_create spends most of its time compiling SQL, about 5x slower for a
million rows), and the matching
daily rollups are summed here and written day by day in the same transaction as that
day's records, so the dashboards (which read rollups) always agree with the request log
(which reads records). The ledger is not touched: this is history to look at, not money.
"""

import itertools
import math
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Membership, User, Workspace
from accounts.roles import Role
from console import keys
from console.models import ApiKey, Source, UsageRecord, UsageRollup
from console.pricing import format_money
from console.usage import cost_of

BATCH = 5_000
COLUMNS = (
    "request_id",
    "workspace",
    "api_key",
    "user",
    "source",
    "product",
    "endpoint",
    "model",
    "node",
    "status",
    "stream",
    "tokens_in",
    "tokens_out",
    "units",
    "cost",
    "latency_ms",
    "ttft_ms",
    "error",
    "created_at",
)

# Made-up teammates, added to the workspace if they are not in it yet.
MEMBERS = [
    ("Maya Patel", "developer"),
    ("Jonas Weber", "developer"),
    ("Lea Moreau", "admin"),
    ("Sam Okafor", "viewer"),
]


@dataclass(frozen=True)
class Call:
    """A kind of call: what it is, how big it tends to be and how long it takes."""

    product: str
    model: str
    endpoint: str
    tokens_in: int  # median
    tokens_out: int  # median
    base_ms: int  # latency before the first token
    ms_per_token: float
    unit: str = ""
    variants: tuple[str, ...] = ("",)


CALLS = {
    "chat-mira": Call("chat", "mira", "/v1/chat/completions", 700, 220, 260, 4.5),
    "chat-pro": Call("chat", "mira-pro", "/v1/chat/completions", 1400, 380, 420, 8.0),
    "chat-max": Call("chat", "mira-max", "/v1/chat/completions", 2600, 650, 700, 14.0),
    "messages-pro": Call("chat", "mira-pro", "/v1/messages", 1800, 420, 450, 8.0),
    "responses": Call("responses", "mira", "/v1/responses", 900, 260, 300, 5.0),
    "responses-pro": Call("responses", "mira-pro", "/v1/responses", 1600, 400, 450, 8.0),
    "embed": Call("embeddings", "mira-embed", "/v1/embeddings", 380, 0, 45, 0.02),
    "images": Call(
        "images",
        "mira-max",
        "/v1/images/generations",
        60,
        0,
        5200,
        0,
        unit="image",
        variants=("low", "medium", "medium", "high"),
    ),
    "vision": Call("vision", "mira-pro", "/v1/chat/completions", 1100, 180, 650, 8.0, unit="image"),
}

# (name, share of API calls, {call: weight}): who calls what.
KEYS = [
    ("Production backend", 34, {"chat-mira": 6, "chat-pro": 3, "messages-pro": 1}),
    ("Search indexer", 24, {"embed": 1}),
    ("Support assistant", 16, {"chat-pro": 3, "chat-max": 1, "responses-pro": 2}),
    ("Mobile app", 14, {"chat-mira": 4, "responses": 2, "vision": 1}),
    ("Staging", 8, {"chat-mira": 2, "chat-pro": 1, "embed": 1, "responses": 1}),
    ("Creative studio", 4, {"images": 3, "vision": 1, "chat-max": 1}),
]
PLAYGROUND_SHARE = 0.06
PLAYGROUND_CALLS = {"chat-mira": 3, "chat-pro": 3, "chat-max": 2, "responses": 1, "images": 1}
NODES = ["mira-us-east-1", "mira-us-east-2", "mira-eu-west-1"]

# (status, weight, message, reached a node): what failures look like.
FAILURES = [
    (429, 38, "Rate limit reached for requests per minute.", False),
    (400, 18, "Invalid request: 'messages' must not be empty.", False),
    (402, 4, "Insufficient balance. Add credit on the Billing page and try again.", False),
    (499, 10, "The client closed the connection before the response ended.", True),
    (500, 8, "The upstream node answered 500: internal error.", True),
    (502, 10, "The upstream node closed the connection mid-response.", True),
    (503, 8, "No healthy upstream node could take the call.", False),
    (504, 4, "The upstream node did not answer within 120 s.", True),
]
ERROR_RATE = 0.022
# Hour of the day (UTC) -> how busy it is.
HOURS = [3, 2, 2, 2, 2, 3, 4, 6, 8, 9, 10, 10, 11, 13, 14, 14, 13, 12, 11, 9, 7, 6, 5, 4]


def _lognormal(rng: random.Random, median: float, sigma: float = 0.6) -> int:
    return int(rng.lognormvariate(math.log(median), sigma)) if median > 0 else 0


def _cumulative(mapping: dict) -> tuple[list, list[float]]:
    """Names and cumulative weights, for random.choices without re-summing on every call."""
    return list(mapping), list(itertools.accumulate(float(w) for w in mapping.values()))


FAILURE_OUTCOMES = [(status, message, reached) for status, _, message, reached in FAILURES]
FAILURE_WEIGHTS = list(itertools.accumulate(weight for _, weight, _, _ in FAILURES))


def _outcome(call: Call, rng: random.Random, error_rate: float) -> tuple:
    """How one call went: status, node, stream, tokens in and out, units, cost, latency,
    time to first token, error."""
    tokens_in = max(1, _lognormal(rng, call.tokens_in)) if call.tokens_in else 0
    tokens_out = _lognormal(rng, call.tokens_out, 0.7) if call.tokens_out else 0
    stream = call.tokens_out > 0 and rng.random() < 0.55
    units: dict = {}
    variant = rng.choice(call.variants)
    if call.unit:
        units[call.unit] = rng.choice((1, 1, 1, 2, 4)) if call.product == "images" else 1
    status, error, node = 200, "", rng.choice(NODES)
    latency = call.base_ms * rng.uniform(0.6, 1.6) + tokens_out * call.ms_per_token
    if rng.random() < error_rate:
        status, error, reached = rng.choices(FAILURE_OUTCOMES, cum_weights=FAILURE_WEIGHTS)[0]
        if not reached:
            node, tokens_in, tokens_out, units, latency = "", 0, 0, {}, rng.uniform(3, 40)
        elif status == 499:
            tokens_out = int(tokens_out * rng.random())
            latency *= rng.random()
        else:
            tokens_out, units = 0, {}
            latency = rng.uniform(200, 3000) if status != 504 else 120_000
    latency_ms = max(1, int(latency))
    ttft = None
    if stream and status < 400:
        ttft = max(1, int(call.base_ms * rng.uniform(0.5, 1.2)))
        latency_ms = max(latency_ms, ttft)
    cost = cost_of(
        product=call.product,
        model=call.model,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        units=units,
        variant=variant,
    )
    return status, node, stream, tokens_in, tokens_out, units, cost, latency_ms, ttft, error


def _superuser() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        row = cursor.fetchone()
    return bool(row and row[0])


class _Preparer:
    """Values as the database wants them (each field's own get_db_prep_save, so SQLite and
    PostgreSQL both work), cached where few distinct values repeat, and the INSERT itself."""

    def __init__(self) -> None:
        self.fields = {name: UsageRecord._meta.get_field(name) for name in COLUMNS}
        self._keys: dict = {}
        self._units: dict = {}
        quote = connection.ops.quote_name
        columns = ", ".join(quote(self.fields[name].column) for name in COLUMNS)
        marks = ", ".join(["%s"] * len(COLUMNS))
        table = quote(UsageRecord._meta.db_table)
        # Only quoted names from the model are formatted in; the values go as parameters.
        self.sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608
        postgres = connection.vendor == "postgresql"
        self.copy_sql = f"COPY {table} ({columns}) FROM STDIN" if postgres else ""
        self.skip_key_checks = postgres and _superuser()

    def key(self, key_id):
        if key_id not in self._keys:
            self._keys[key_id] = self.fields["api_key"].get_db_prep_save(key_id, connection)
        return self._keys[key_id]

    def units(self, units: dict):
        found = tuple(sorted(units.items()))
        if found not in self._units:
            self._units[found] = self.fields["units"].get_db_prep_save(units, connection)
        return self._units[found]

    def moment(self, moment: datetime):
        return self.fields["created_at"].get_db_prep_save(moment, connection)

    def insert(self, rows: list[tuple]) -> None:
        with connection.cursor() as cursor:
            if self.skip_key_checks:
                # Every workspace, key and member id here was just read from the database:
                # PostgreSQL need not look each one up again (a trigger per row and foreign
                # key, most of the time COPY takes). For this transaction only; superusers only.
                cursor.execute("SET LOCAL session_replication_role = replica")
            if self.copy_sql:
                # PostgreSQL: COPY streams the rows in one statement, several times faster.
                with cursor.cursor.copy(self.copy_sql) as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cursor.executemany(self.sql, rows)


class Command(BaseCommand):
    help = "Fill a workspace with synthetic usage records and their daily rollups (not the ledger)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--records", type=int, required=True, help="how many calls to make up")
        parser.add_argument("--workspace", default="demo", help="the workspace's slug (demo)")
        parser.add_argument("--days", type=int, default=30, help="spread over this many days (30)")
        parser.add_argument("--seed", type=int, default=None, help="for repeatable history")

    def handle(self, *args, records: int, workspace: str, days: int, seed: int | None, **options):
        if records < 1:
            raise CommandError("--records must be at least 1.")
        if not 1 <= days <= 3660:
            raise CommandError("--days must be between 1 and 3660.")
        found = Workspace.objects.filter(slug=workspace).first()
        if found is None:
            hint = " Run `manage.py demo` first." if workspace == "demo" else ""
            raise CommandError(f"No workspace with the slug {workspace!r}.{hint}")
        started = time.monotonic()
        if connection.vendor == "sqlite":
            # Request ids are random, so their unique index is written all over: with SQLite's
            # default 2 MB page cache a million inserts mostly wait for pages.
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA cache_size = -262144")  # 256 MB, this connection only
        rng = random.Random(seed)
        members = self._members(found)
        api_keys = self._keys(found, members, rng)
        written = rollup_rows = spend = 0
        today = timezone.now().date()
        for day, count in self._per_day(records, days, today, rng):
            made, rows, cost = self._day(found, day, count, members, api_keys, rng)
            written += made
            rollup_rows += rows
            spend += cost
            if options["verbosity"] > 1:
                self.stdout.write(f"  {day}: {made:,} calls")
        last_used = timezone.now()
        ApiKey.objects.filter(pk__in=[k.pk for k, _, _ in api_keys]).update(last_used_at=last_used)
        seconds = time.monotonic() - started
        self.stdout.write(
            self.style.SUCCESS(f"Seeded {written:,} usage records in {found.slug}")
            + f" over {days} day{'s' if days != 1 else ''} ({today - timedelta(days=days - 1)}"
            + f" to {today}), from {len(api_keys)} API keys and {len(members)} members:"
            + f"\n  {rollup_rows:,} daily rollup rows written or updated,"
            + f" {format_money(spend)} of spend at current prices (the ledger is untouched),"
            + f"\n  in {seconds:.1f} s ({written / max(seconds, 1e-9):,.0f} records/s)."
        )

    # ---------- who calls ----------

    def _members(self, workspace: Workspace) -> list[User]:
        for name, role in MEMBERS:
            email = f"{name.lower().replace(' ', '.')}+{workspace.slug}@example.com"
            user = User.objects.filter(email=email).first()
            if user is None:
                user = User.objects.create_user(email=email, password=None, name=name)
            Membership.objects.get_or_create(
                user=user, workspace=workspace, defaults={"role": Role(role)}
            )
        memberships = Membership.objects.for_workspace(workspace).select_related("user")
        return [m.user for m in memberships.order_by("pk")]

    def _keys(
        self, workspace: Workspace, members: list[User], rng: random.Random
    ) -> list[tuple[ApiKey, float, dict]]:
        builders = [
            m.user
            for m in Membership.objects.for_workspace(workspace)
            .exclude(role=Role.VIEWER)
            .select_related("user")
            .order_by("pk")
        ] or members
        found = []
        for index, (name, share, calls) in enumerate(KEYS):
            key = ApiKey.objects.for_workspace(workspace).filter(name=name).first()
            if key is None:
                secret = keys.generate_secret()
                key = ApiKey.objects.create(
                    workspace=workspace,
                    created_by=builders[index % len(builders)],
                    name=name,
                    prefix=keys.display_prefix(secret),
                    last_four=secret[-4:],
                    key_hash=keys.hash_secret(secret),
                )
            found.append((key, share, calls))
        return found

    # ---------- when ----------

    def _per_day(
        self, records: int, days: int, today: date, rng: random.Random
    ) -> list[tuple[date, int]]:
        """How many calls each day gets: growing over the period, quieter at weekends, and
        today only as far as it has gone."""
        now = timezone.now()
        elapsed_today = (now - datetime.combine(today, datetime.min.time(), tzinfo=UTC)) / (
            timedelta(days=1)
        )
        weights = []
        for back in range(days - 1, -1, -1):
            day = today - timedelta(days=back)
            weight = 0.55 + 0.45 * (1 - back / max(days - 1, 1))
            weight *= 0.55 if day.weekday() >= 5 else 1.0
            weight *= rng.uniform(0.88, 1.12)
            if back == 0:
                weight *= max(elapsed_today, 0.02)
            weights.append((day, weight))
        total = sum(w for _, w in weights)
        counts = [(day, int(records * w / total)) for day, w in weights]
        short = records - sum(c for _, c in counts)
        for i in range(short):  # hand out what rounding left over, busiest days first
            day, count = counts[-1 - (i % len(counts))]
            counts[-1 - (i % len(counts))] = (day, count + 1)
        return counts

    # ---------- what ----------

    @transaction.atomic
    def _day(
        self,
        workspace: Workspace,
        day: date,
        count: int,
        members: list[User],
        api_keys: list[tuple[ApiKey, float, dict]],
        rng: random.Random,
    ) -> tuple[int, int, int]:
        """Make up one day's calls; write them and that day's rollups together."""
        start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        limit = min(timezone.now(), start + timedelta(days=1)) - timedelta(microseconds=1)
        span_hours = max(1, min(24, math.ceil((limit - start) / timedelta(hours=1))))
        hour_weights = list(itertools.accumulate(HOURS[:span_hours]))
        key_weights = list(itertools.accumulate(share for _, share, _ in api_keys))
        key_calls = [_cumulative(calls) for _, _, calls in api_keys]
        playground_calls = _cumulative(PLAYGROUND_CALLS)
        # An incident now and then: a day when calls fail far more often.
        error_rate = ERROR_RATE * (4 if rng.random() < 0.06 else 1)
        prepare = _Preparer()
        rollups: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
        batch: list[tuple] = []
        spend = 0
        hours, keys_range = range(span_hours), range(len(api_keys))
        latest = (limit - start).total_seconds()
        for _ in range(count):
            hour = rng.choices(hours, cum_weights=hour_weights)[0]
            # Today's current hour is only partly over: its calls fall before now.
            room = min(3600.0, latest - hour * 3600)
            offset = hour * 3600 + rng.random() * room
            moment = start + timedelta(seconds=offset)
            if rng.random() < PLAYGROUND_SHARE:
                key, user_id, source = None, rng.choice(members).pk, Source.PLAYGROUND
                names, weights = playground_calls
            else:
                index = rng.choices(keys_range, cum_weights=key_weights)[0]
                key, source = api_keys[index][0], Source.API
                user_id = key.created_by_id  # what the gateway records for a key's calls
                names, weights = key_calls[index]
            call = CALLS[rng.choices(names, cum_weights=weights)[0]]
            status, node, stream, tokens_in, tokens_out, units, cost, latency, ttft, error = (
                _outcome(call, rng, error_rate)
            )
            key_id = key.pk if key else None
            batch.append(
                (
                    # Not from `rng`: a second run with the same seed still needs new ids.
                    f"req_{uuid.uuid4().hex}",
                    workspace.pk,
                    prepare.key(key_id),
                    user_id,
                    source.value,
                    call.product,
                    call.endpoint,
                    call.model,
                    node,
                    status,
                    stream,
                    tokens_in,
                    tokens_out,
                    prepare.units(units),
                    cost,
                    latency,
                    ttft,
                    error,
                    prepare.moment(moment),
                )
            )
            spend += cost
            totals = rollups[(key_id, user_id, call.model, call.product, source.value)]
            totals[0] += 1
            totals[1] += status >= 400
            totals[2] += tokens_in
            totals[3] += tokens_out
            totals[4] += cost
            totals[5] += latency
            if len(batch) >= BATCH:
                prepare.insert(batch)
                batch = []
        if batch:
            prepare.insert(batch)
        return count, self._write_rollups(workspace, day, rollups), spend

    def _write_rollups(self, workspace: Workspace, day: date, rollups: dict) -> int:
        """Add the day's sums to its rollup rows: new rows in bulk, existing ones (from live
        calls, or an earlier run) incremented in place, as `console.usage` would have."""
        by_dimensions = {
            "|".join(str(v or "") for v in dims): (dims, totals) for dims, totals in rollups.items()
        }
        existing = dict(
            UsageRollup.objects.filter(
                workspace=workspace, day=day, dimensions__in=list(by_dimensions)
            ).values_list("dimensions", "pk")
        )
        new = []
        for dimensions, (
            (key_id, user_id, model, product, source),
            totals,
        ) in by_dimensions.items():
            requests, errors, tokens_in, tokens_out, cost, latency = totals
            if dimensions in existing:
                UsageRollup.objects.filter(pk=existing[dimensions]).update(
                    requests=F("requests") + requests,
                    errors=F("errors") + errors,
                    tokens_in=F("tokens_in") + tokens_in,
                    tokens_out=F("tokens_out") + tokens_out,
                    cost=F("cost") + cost,
                    latency_ms_total=F("latency_ms_total") + latency,
                )
                continue
            new.append(
                UsageRollup(
                    workspace=workspace,
                    day=day,
                    dimensions=dimensions,
                    api_key_id=key_id,
                    user_id=user_id,
                    model=model,
                    product=product,
                    source=source,
                    requests=requests,
                    errors=errors,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    cost=cost,
                    latency_ms_total=latency,
                )
            )
        UsageRollup.objects.bulk_create(new, batch_size=1_000)
        return len(by_dimensions)
