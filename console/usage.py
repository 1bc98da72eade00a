"""Booking a finished call: its usage record, its charge and the daily rollups, in one transaction."""

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Q
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


def _rollup(record: UsageRecord) -> None:
    dimensions = "|".join(
        str(v or "")
        for v in (record.api_key_id, record.user_id, record.model, record.product, record.source)
    )
    key = {
        "workspace_id": record.workspace_id,
        "day": record.created_at.date(),
        "dimensions": dimensions,
    }
    fields = {
        "api_key_id": record.api_key_id,
        "user_id": record.user_id,
        "model": record.model,
        "product": record.product,
        "source": record.source,
    }
    try:
        with transaction.atomic():
            row, _ = UsageRollup.objects.get_or_create(**key, defaults=fields)
    except IntegrityError:
        row = UsageRollup.objects.get(**key)
    UsageRollup.objects.filter(pk=row.pk).update(
        requests=F("requests") + 1,
        errors=F("errors") + (1 if record.status >= 400 else 0),
        tokens_in=F("tokens_in") + record.tokens_in,
        tokens_out=F("tokens_out") + record.tokens_out,
        cost=F("cost") + record.cost,
        latency_ms_total=F("latency_ms_total") + record.latency_ms,
    )


@transaction.atomic
def book(*, variant: str = "", **fields) -> UsageRecord:
    """Write the call's usage record, settle its hold to the actual cost, update the rollups."""
    cost = cost_of(
        product=fields["product"],
        model=fields["model"],
        tokens_in=fields["tokens_in"],
        tokens_out=fields["tokens_out"],
        units=fields["units"],
        variant=variant,
    )
    charge = ledger.settle(request_id=fields["request_id"], cost=cost)
    record = UsageRecord.objects.create(cost=charge, **fields)
    _rollup(record)
    if record.api_key_id:
        # last_used_at is for people: a write every 30 s per key is enough.
        now = timezone.now()
        ApiKey.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - timedelta(seconds=30)),
            pk=record.api_key_id,
        ).update(last_used_at=now)
    if charge:
        alerts.check(workspace_id=record.workspace_id, api_key_id=record.api_key_id)
    return record
