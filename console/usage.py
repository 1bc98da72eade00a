"""Booking a finished call: its usage record, its charge and the daily rollups, in one transaction."""

import hashlib
import time
import uuid
from datetime import UTC, date
from functools import cache

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from console import alerts, ledger, pricing
from console.models import ApiKey, Unit, UsageRecord, UsageRollup


def cost_of(
    *, product: str, model: str, tokens_in: int, tokens_out: int, units: dict, variant: str = ""
) -> int:
    """What a call costs at today's prices, in micro-units."""
    cost = pricing.token_cost(product, model, tokens_in, tokens_out)
    for unit, quantity in units.items():
        if unit in Unit.values and unit not in (
            Unit.INPUT_TOKEN,
            Unit.OUTPUT_TOKEN,
            Unit.EMBEDDING_TOKEN,
        ):
            cost += pricing.unit_cost(product, model, unit, int(quantity), variant)
    return cost


def call_cost(fields: dict, variant: str = "") -> int:
    """What a finished call costs, from its usage record's fields."""
    return cost_of(
        product=fields["product"],
        model=fields["model"],
        tokens_in=fields["tokens_in"],
        tokens_out=fields["tokens_out"],
        units=fields["units"],
        variant=variant,
    )


async def recorded_cost(request_id: str) -> int:
    """What a booked call was charged (0 when it is not booked yet)."""
    cost = await (
        UsageRecord.objects.filter(request_id=request_id).values_list("cost", flat=True).afirst()
    )
    return cost or 0


_rollup_ids: dict[tuple[int, date, str], int] = {}
_key_used_at: dict[str, float] = {}


def _insert_record(cursor, record: UsageRecord) -> None:
    """The usage record in one INSERT (the ORM's save costs more than the query, on every call)."""
    fields = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]
    values = [f.get_db_prep_save(getattr(record, f.attname), connection) for f in fields]
    columns = ", ".join(f.column for f in fields)
    placeholders = ", ".join(["%s"] * len(values))
    cursor.execute(
        f"INSERT INTO {UsageRecord._meta.db_table} ({columns}) VALUES ({placeholders}) RETURNING id",
        values,
    )
    record.pk = cursor.fetchone()[0]


@cache
def _record_plan() -> tuple[str, tuple[str, ...], tuple[tuple[int, str], ...]]:
    """The usage record's columns; the field each takes its value from; and the places
    whose values the database needs prepared, with the kind of value ("DateTimeField",
    "JSONField" or "UUIDField"). The driver takes the other values as they are."""
    fields = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(f.column for f in fields)
    prepared = []
    for index, f in enumerate(fields):
        kind = (f.target_field if f.is_relation else f).get_internal_type()
        if kind in ("DateTimeField", "JSONField", "UUIDField"):
            prepared.append((index, kind))
    return columns, tuple(f.attname for f in fields), tuple(prepared)


def _insert_records(cursor, records: list[dict]) -> None:
    """Many usage records (their fields by attribute name) in one statement, run for
    each by the driver (`executemany`).

    Values are prepared with the backend's own adapters, the ones the fields would call,
    and only those that need it: the fields' per-value machinery was most of the cost
    of a batch.
    """
    columns, names, prepared = _record_plan()
    db = cursor.db
    adapt_json, native_uuid = db.ops.adapt_json_value, db.features.has_native_uuid_field
    sqlite = db.vendor == "sqlite"
    rows = []
    for record in records:
        row = [record[name] for name in names]
        for index, kind in prepared:
            value = row[index]
            if value is None:
                continue
            if kind == "DateTimeField":
                # SQLite keeps naive UTC text, as Django writes it; the others take the value.
                if sqlite:
                    row[index] = str(value.astimezone(UTC).replace(tzinfo=None))
            elif kind == "JSONField":
                row[index] = adapt_json(value, None)
            else:
                value = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
                row[index] = value if native_uuid else value.hex
        rows.append(row)
    marks = ", ".join(["%s"] * len(names))
    cursor.executemany(
        f"INSERT INTO {UsageRecord._meta.db_table} ({columns}) VALUES ({marks})", rows
    )


_DIMENSIONS = ("api_key_id", "user_id", "model", "product", "source")


def _dimensions(record: dict) -> str:
    """The rollup's dimensions of a record's fields (by attribute name); the model asked
    for only when an alias served it, so that the other calls keep their rows (as a
    digest: two model names would not fit in the column)."""
    dimensions = "|".join(str(record[name] or "") for name in _DIMENSIONS)
    asked = record["model_asked"]
    if not asked:
        return dimensions
    return f"{dimensions}|{hashlib.blake2b(asked.encode(), digest_size=8).hexdigest()}"


def _change(record: dict) -> list[int]:
    return [
        1,
        1 if record["status"] >= 400 else 0,
        record["tokens_in"],
        record["tokens_out"],
        record["cost"],
        record["latency_ms"],
    ]


def _rollup(cursor, record: dict, change: list[int] | None = None) -> None:
    """Add a record (its fields by attribute name), or `change`, to its day's rollup."""
    dimensions = _dimensions(record)
    key = (record["workspace_id"], record["created_at"].date(), dimensions)
    change = change or _change(record)
    update = (
        f"UPDATE {UsageRollup._meta.db_table} SET requests = requests + %s, errors = errors + %s, "
        "tokens_in = tokens_in + %s, tokens_out = tokens_out + %s, cost = cost + %s, "
        "latency_ms_total = latency_ms_total + %s WHERE id = %s AND workspace_id = %s AND dimensions = %s"
    )
    # The identity is checked as well as the id: a cached id may be that of a row
    # rolled back since, whose id another row now has.
    if key in _rollup_ids:
        cursor.execute(update, [*change, _rollup_ids[key], key[0], dimensions])
        if cursor.rowcount:
            return
    lookup = {"workspace_id": key[0], "day": key[1], "dimensions": dimensions}
    fields = {name: record[name] for name in _DIMENSIONS}
    fields["model_asked"] = record["model_asked"]
    try:
        with transaction.atomic():
            row, _ = UsageRollup.objects.get_or_create(**lookup, defaults=fields)
    except IntegrityError:
        row = UsageRollup.objects.get(**lookup)
    _rollup_ids[key] = row.pk
    cursor.execute(update, [*change, row.pk, key[0], dimensions])


def _touch_key(api_key_id: str) -> None:
    """last_used_at is for people: a write every 30 s per key is enough."""
    now = time.monotonic()
    if now - _key_used_at.get(api_key_id, -1e9) < 30:
        return
    _key_used_at[api_key_id] = now
    ApiKey.objects.filter(pk=api_key_id).update(last_used_at=timezone.now())


def write_records(records: list[dict]) -> None:
    """Usage records already charged (a record's fields, by attribute name, with its cost),
    with their rollups: one update per day and dimensions."""
    groups: dict[tuple[int, date, str], tuple[dict, list[int]]] = {}
    for record in records:
        record.setdefault("model_asked", "")  # journaled before calls noted it
        key = (record["workspace_id"], record["created_at"].date(), _dimensions(record))
        change = _change(record)
        if key in groups:
            total = groups[key][1]
            for index, value in enumerate(change):
                total[index] += value
        else:
            groups[key] = (record, change)
    with connection.cursor() as cursor:
        # In small pieces, letting the event loop's thread in between: it waits for
        # nothing but the interpreter's lock while a batch is written.
        for start in range(0, len(records), 25):
            _insert_records(cursor, records[start : start + 25])
            time.sleep(0)
        for record, change in groups.values():
            _rollup(cursor, record, change)
    for key_id in {str(r["api_key_id"]) for r in records if r["api_key_id"]}:
        _touch_key(key_id)


@transaction.atomic
def book(
    *, variant: str = "", held: ledger.Held | None = None, key_budget: int | None = None, **fields
) -> UsageRecord:
    """Write the call's usage record, settle its hold to the actual cost, update the rollups."""
    cost = call_cost(fields, variant)
    charge = ledger.settle(
        request_id=fields["request_id"], cost=cost, held=held, charge_if_released=held is not None
    )
    fields.setdefault("created_at", timezone.now())
    record = UsageRecord(cost=charge, **fields)
    with connection.cursor() as cursor:
        _insert_record(cursor, record)
        _rollup(cursor, vars(record))
    if record.api_key_id:
        _touch_key(str(record.api_key_id))
    limits = held is None or held.monthly_limit or key_budget
    if charge and limits:
        alerts.check(workspace_id=record.workspace_id, api_key_id=record.api_key_id)
    return record
