"""`manage.py seedusage` makes up usage history whose rollups agree with its records, and
leaves the ledger alone."""

import io
from collections import defaultdict

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count, Sum
from django.utils import timezone

from console import ledger
from console.models import ApiKey, LedgerEntry, Source, UsageRecord, UsageRollup
from console.usage import cost_of
from tests.conftest import ACME_CREDIT


def _seed(**options) -> str:
    out = io.StringIO()
    call_command("seedusage", stdout=out, **({"workspace": "acme", "seed": 5} | options))
    return out.getvalue()


def _by_rollup_key(records) -> dict:
    """The records summed the way the rollups are kept: per day and dimensions."""
    sums: dict = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    for r in records:
        dimensions = "|".join(
            str(v or "") for v in (r.api_key_id, r.user_id, r.model, r.product, r.source)
        )
        row = sums[(r.created_at.date(), dimensions)]
        for i, value in enumerate(
            (1, r.status >= 400, r.tokens_in, r.tokens_out, r.cost, r.latency_ms)
        ):
            row[i] += value
    return dict(sums)


def _rollups(workspace) -> dict:
    return {
        (r.day, r.dimensions): [
            r.requests,
            r.errors,
            r.tokens_in,
            r.tokens_out,
            r.cost,
            r.latency_ms_total,
        ]
        for r in UsageRollup.objects.filter(workspace=workspace)
    }


def test_it_creates_records_and_rollups_that_agree(acme, alice):
    output = _seed(records=1500, days=12)
    records = UsageRecord.objects.filter(workspace=acme)
    rollups = UsageRollup.objects.filter(workspace=acme)

    assert records.count() == 1500
    assert rollups.aggregate(n=Sum("requests"))["n"] == 1500
    assert rollups.aggregate(c=Sum("cost"))["c"] == records.aggregate(c=Sum("cost"))["c"] > 0
    # Not just the totals: every rollup row is the sum of its day's records.
    assert _rollups(acme) == _by_rollup_key(records)
    assert "Seeded 1,500 usage records in acme over 12 days" in output
    assert "rollup rows" in output


def test_the_history_looks_like_real_use(acme, alice):
    _seed(records=3000, days=10)
    records = UsageRecord.objects.filter(workspace=acme)
    assert set(records.values_list("model", flat=True)) >= {
        "mira",
        "mira-pro",
        "mira-max",
        "mira-embed",
    }
    assert set(records.values_list("source", flat=True)) == {Source.API, Source.PLAYGROUND}
    assert records.values("api_key").distinct().count() >= 6
    assert records.values("user").distinct().count() >= 4
    errors = records.filter(status__gte=400).count() / 3000
    assert 0.005 < errors < 0.1
    days = {d.date() for d in records.values_list("created_at", flat=True)}
    assert len(days) == 10
    assert max(records.values_list("created_at", flat=True)) <= timezone.now()
    # Costs are today's prices for the tokens and units recorded.
    for record in records.filter(product="chat", status=200)[:50]:
        assert record.cost == cost_of(
            product=record.product,
            model=record.model,
            tokens_in=record.tokens_in,
            tokens_out=record.tokens_out,
            units=record.units,
        )


def test_it_does_not_touch_the_ledger(acme, alice):
    entries = LedgerEntry.objects.count()
    _seed(records=500, days=5)
    assert LedgerEntry.objects.count() == entries
    assert ledger.balance_of(acme) == ACME_CREDIT


def test_running_it_again_adds_to_the_same_rollups(acme, alice):
    _seed(records=400, days=4)
    rows = UsageRollup.objects.filter(workspace=acme).count()
    _seed(records=400, days=4)
    records = UsageRecord.objects.filter(workspace=acme)
    assert records.count() == 800
    assert ApiKey.objects.filter(workspace=acme).count() == 6  # the same keys, reused
    assert UsageRollup.objects.filter(workspace=acme).count() >= rows
    assert _rollups(acme) == _by_rollup_key(records)


def test_it_adds_to_rollups_that_live_calls_made(acme, alice):
    from tests.console.test_usage_page import _call

    _call(acme, user=alice, source="playground", model="mira")
    _seed(records=300, days=1)
    records = UsageRecord.objects.filter(workspace=acme)
    assert _rollups(acme) == _by_rollup_key(records)
    duplicated = (
        UsageRollup.objects.values("day", "dimensions").annotate(n=Count("id")).filter(n__gt=1)
    )
    assert not duplicated.exists()


def test_it_fills_the_demo_workspace_by_default(db):
    call_command("demo", stdout=io.StringIO())
    out = io.StringIO()
    call_command("seedusage", records=50, stdout=out)
    assert "in demo over 30 days" in out.getvalue()
    assert UsageRecord.objects.filter(workspace__slug="demo").count() == 50


def test_an_unknown_workspace_is_a_clear_error(db):
    with pytest.raises(CommandError, match="No workspace with the slug 'nowhere'"):
        _seed(records=10, workspace="nowhere")
    with pytest.raises(CommandError, match="Run `manage.py demo` first"):
        _seed(records=10, workspace="demo")


def test_it_refuses_nonsense_counts(acme):
    with pytest.raises(CommandError, match="--records"):
        _seed(records=0)
    with pytest.raises(CommandError, match="--days"):
        _seed(records=10, days=0)
