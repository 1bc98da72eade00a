"""The Usage page: totals and charts from the rollups, filters, CSV export, the request log
with keyset pagination, one call's detail, who may see it, and bad filter input."""

import csv
import io
import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db.models import Count, Sum
from django.utils import timezone

from accounts.roles import Role
from console import dashboards, ledger
from console.actions import create_key
from console.models import UsageRecord
from console.usage import book, cost_of
from tests.conftest import signed_in

URL = "/w/acme/usage/"
CSV_URL = "/w/acme/usage/export.csv"
HX = {"HX-Request": "true"}
TOTAL = re.compile(r'data-total="([a-z_]+)" data-value="([^"]*)"')
ROW = re.compile(r'<tr id="call-(\d+)"')
OLDER = re.compile(r'href="([^"]*cursor=[^"#]*)#log"')


def _call(
    workspace,
    *,
    key=None,
    user=None,
    model: str = "mira",
    product: str = "chat",
    source: str = "api",
    status: int = 200,
    tokens_in: int = 1000,
    tokens_out: int = 500,
    latency_ms: int = 800,
    days_ago: int = 0,
    at=None,
    charge: bool = True,
) -> UsageRecord:
    """One settled call, booked as the gateway books it (a hold first, so that it costs)."""
    request_id = f"req_{uuid.uuid4().hex}"
    units: dict = {}
    if charge and status < 400:
        amount = cost_of(
            product=product, model=model, tokens_in=tokens_in, tokens_out=tokens_out, units=units
        )
        if amount:
            ledger.hold(
                workspace_id=workspace.pk,
                api_key_id=key.pk if key else None,
                key_budget=None,
                amount=amount,
                request_id=request_id,
            )
    return book(
        request_id=request_id,
        workspace_id=workspace.pk,
        api_key_id=key.pk if key else None,
        user_id=user.pk if user else (key.created_by_id if key else None),
        source=source,
        product=product,
        endpoint="/v1/embeddings" if product == "embeddings" else "/v1/chat/completions",
        model=model,
        node="sim-1",
        status=status,
        stream=False,
        tokens_in=tokens_in,
        tokens_out=tokens_out if status < 400 else 0,
        units=units,
        latency_ms=latency_ms,
        ttft_ms=None,
        error="" if status < 400 else "The upstream node closed the connection.",
        created_at=at or timezone.now() - timedelta(days=days_ago),
    )


def _totals(response) -> dict[str, str]:
    return dict(TOTAL.findall(response.content.decode()))


def _csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def _micro(value: str) -> int:
    return int(Decimal(value) * 1_000_000)


@pytest.fixture
def usage(acme, alice, bob):
    """A month of Acme's calls: two keys, two members, three models, both sources."""
    backend, _ = create_key(workspace=acme, name="Backend", created_by=alice)
    indexer, _ = create_key(workspace=acme, name="Indexer", created_by=bob)
    calls = [
        _call(acme, key=backend, model="mira", tokens_in=1200, tokens_out=300),
        _call(acme, key=backend, model="mira-pro", tokens_in=2000, tokens_out=800),
        _call(acme, key=backend, model="mira-pro", status=502, latency_ms=1500),
        _call(acme, key=backend, model="mira", days_ago=3),
        _call(acme, key=indexer, model="mira-embed", product="embeddings", tokens_out=0),
        _call(acme, key=indexer, model="mira-embed", product="embeddings", days_ago=2),
        _call(acme, user=bob, model="mira-max", source="playground", days_ago=1),
        _call(acme, key=backend, model="mira", days_ago=20),
    ]
    return {"backend": backend, "indexer": indexer, "calls": calls}


def _expected(records) -> dict:
    return {
        "requests": len(records),
        "errors": sum(r.status >= 400 for r in records),
        "spend": sum(r.cost for r in records),
        "tokens_in": sum(r.tokens_in for r in records),
        "tokens_out": sum(r.tokens_out for r in records),
    }


def _shown(response) -> dict:
    totals = _totals(response)
    return {
        "requests": int(totals["requests"]),
        "errors": int(totals["errors"]),
        "spend": int(totals["spend"]),
        "tokens_in": int(totals["tokens_in"]),
        "tokens_out": int(totals["tokens_out"]),
    }


# ---------- the page ----------


def test_it_shows_totals_charts_and_the_log_for_the_last_30_days(alice_client, usage):
    response = alice_client.get(URL)
    assert response.status_code == 200
    assert _shown(response) == _expected(usage["calls"])
    assert all(call.cost > 0 for call in usage["calls"] if call.status < 400)
    page = response.content.decode()
    for chart in ("spend", "requests", "tokens", "errors", "latency"):
        assert f'id="chart-{chart}"' in page
    assert page.count('class="chart-bar') >= 5
    assert "<title>" in page and "Day total:" in page
    assert 'class="legend-item"><span class="swatch s-0"></span>mira-max' in page  # most spent
    assert len(ROW.findall(page)) == len(usage["calls"])


def test_the_charts_and_totals_read_rollups_not_raw_records(alice_client, usage):
    # Records alone (no rollup rows) are invisible to the totals: the dashboard reads rollups.
    UsageRecord.objects.create(
        request_id="req_only_a_record",
        workspace=usage["backend"].workspace,
        product="chat",
        endpoint="/v1/chat/completions",
        model="mira",
        status=200,
        cost=999_999,
    )
    assert _shown(alice_client.get(URL))["requests"] == len(usage["calls"])


def test_filters_change_the_totals_and_the_chart(alice_client, usage, bob):
    calls, backend, indexer = usage["calls"], usage["backend"], usage["indexer"]
    cases = {
        "model=mira-pro": [c for c in calls if c.model == "mira-pro"],
        f"key={indexer.pk}": [c for c in calls if c.api_key_id == indexer.pk],
        f"member={bob.pk}": [c for c in calls if c.user_id == bob.pk],
        "product=embeddings": [c for c in calls if c.product == "embeddings"],
        "source=playground": [c for c in calls if c.source == "playground"],
        "range=7d": [c for c in calls if c.created_at > timezone.now() - timedelta(days=7)],
        f"key={backend.pk}&model=mira": [
            c for c in calls if c.api_key_id == backend.pk and c.model == "mira"
        ],
    }
    everything = alice_client.get(URL).content.decode()
    for query, expected in cases.items():
        response = alice_client.get(f"{URL}?{query}")
        assert response.status_code == 200, query
        assert _shown(response) == _expected(expected), query
        assert response.content.decode() != everything
    only_pro = alice_client.get(f"{URL}?model=mira-pro").content.decode()
    assert "mira-pro" in only_pro.split('id="chart-spend"')[1].split("</figure>")[0]
    assert "mira-embed" not in only_pro.split('id="chart-spend"')[1].split("</figure>")[0]


def test_a_custom_range_counts_whole_utc_days(alice_client, usage):
    today = timezone.now().date()
    query = f"from={today - timedelta(days=3)}&to={today - timedelta(days=1)}"
    response = alice_client.get(f"{URL}?{query}")
    expected = [c for c in usage["calls"] if 1 <= (today - c.created_at.date()).days <= 3]
    assert _shown(response) == _expected(expected)
    assert 'value="custom" selected' in response.content.decode()


def test_grouping_by_product_stacks_the_charts_by_product(alice_client, usage):
    response = alice_client.get(f"{URL}?group=product")
    spend = response.content.decode().split('id="chart-spend"')[1].split("</figure>")[0]
    assert "Embeddings" in spend and "Chat" in spend
    assert "mira-pro" not in spend


def test_an_htmx_filter_change_gets_only_the_page_body(alice_client, usage):
    response = alice_client.get(f"{URL}?model=mira", headers=HX)
    page = response.content.decode()
    assert response.status_code == 200
    assert page.lstrip().startswith('<div id="usage-page"')
    assert "<html" not in page
    assert _shown(response) == _expected([c for c in usage["calls"] if c.model == "mira"])


def test_every_htmx_link_has_a_real_href(alice_client, usage, monkeypatch):
    monkeypatch.setattr(dashboards, "LOG_PAGE", 3)
    page = alice_client.get(URL).content.decode()
    links = re.findall(r"<a [^>]*hx-get=[^>]*>", page)
    assert links
    for link in links:
        href = re.search(r'href="([^"]+)"', link).group(1)
        hx_get = re.search(r'hx-get="([^"]+)"', link).group(1)
        assert href.split("#")[0] == hx_get


def test_a_workspace_without_usage_shows_the_empty_state(alice_client):
    response = alice_client.get(URL)
    assert response.status_code == 200
    assert "No usage yet" in response.content.decode()
    assert 'id="chart-spend"' not in response.content.decode()


def test_filters_that_match_nothing_say_so(alice_client, usage):
    response = alice_client.get(f"{URL}?model=mira-nothing")
    assert response.status_code == 200
    assert "No calls match these filters" in response.content.decode()


# ---------- CSV ----------


@pytest.mark.parametrize("query", ["", "group=product", "model=mira-pro", "range=7d&source=api"])
def test_the_csv_export_matches_what_the_page_shows(alice_client, usage, query):
    page = alice_client.get(f"{URL}?{query}")
    export = alice_client.get(f"{CSV_URL}?{query}")
    assert export.status_code == 200
    assert export["Content-Type"].startswith("text/csv")
    assert "attachment" in export["Content-Disposition"]
    rows = _csv(export)
    group = "product" if "group=product" in query else "model"
    assert list(rows[0]) == [
        "date",
        group,
        "requests",
        "errors",
        "tokens_in",
        "tokens_out",
        "spend_usd",
        "average_latency_ms",
    ]
    shown = _shown(page)
    assert sum(int(r["requests"]) for r in rows) == shown["requests"]
    assert sum(int(r["errors"]) for r in rows) == shown["errors"]
    assert sum(int(r["tokens_in"]) for r in rows) == shown["tokens_in"]
    assert sum(int(r["tokens_out"]) for r in rows) == shown["tokens_out"]
    assert sum(_micro(r["spend_usd"]) for r in rows) == shown["spend"]
    # One row per day and group, and the page links to exactly this export.
    assert len({(r["date"], r[group]) for r in rows}) == len(rows)
    assert f'href="{CSV_URL}{"?" + query if query else ""}"'.replace("&", "&amp;") in (
        page.content.decode()
    )


def test_the_csv_has_one_row_per_day_and_model(alice_client, usage):
    rows = _csv(alice_client.get(CSV_URL))
    expected = (
        UsageRecord.objects.values("created_at__date", "model")
        .annotate(n=Count("id"), cost=Sum("cost"))
        .order_by("created_at__date", "model")
    )
    assert [(r["date"], r["model"], int(r["requests"]), _micro(r["spend_usd"])) for r in rows] == [
        (str(e["created_at__date"]), e["model"], e["n"], e["cost"]) for e in expected
    ]


def test_the_csv_does_not_let_a_model_name_run_as_a_formula(alice_client, acme, alice):
    _call(acme, user=alice, model='=HYPERLINK("http://evil.example","x")', charge=False)
    rows = _csv(alice_client.get(CSV_URL))
    assert rows[0]["model"] == '\'=HYPERLINK("http://evil.example","x")'


# ---------- the request log ----------


def _walk(client, url: str, *, htmx: bool) -> list[int]:
    """Follow "Older calls" to the end; the ids of every row seen, in order."""
    seen: list[int] = []
    pages = 0
    while url:
        response = client.get(url, headers=HX if htmx else {})
        assert response.status_code == 200
        page = response.content.decode()
        seen += [int(pk) for pk in ROW.findall(page)]
        older = OLDER.search(page)
        url = older.group(1).replace("&amp;", "&") if older else ""
        pages += 1
        assert pages < 50
    return seen


@pytest.mark.parametrize("htmx", [True, False])
def test_keyset_pagination_returns_every_record_exactly_once(
    alice_client, acme, alice, monkeypatch, htmx
):
    monkeypatch.setattr(dashboards, "LOG_PAGE", 4)
    moment = timezone.now() - timedelta(hours=1)
    for i in range(9):  # several calls at the very same microsecond: ties broken by id
        _call(acme, user=alice, at=moment, charge=False)
        _call(acme, user=alice, at=moment - timedelta(minutes=i + 1), charge=False)
    _call(acme, user=alice, days_ago=40, charge=False)  # outside the range

    first = alice_client.get(URL).content.decode()
    assert len(ROW.findall(first)) == 4
    older = OLDER.search(first).group(1).replace("&amp;", "&")
    seen = [int(pk) for pk in ROW.findall(first)] + _walk(alice_client, older, htmx=htmx)

    expected = list(
        UsageRecord.objects.filter(created_at__gte=timezone.now() - timedelta(days=29, hours=23))
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)
    )
    assert len(expected) == 18
    assert seen == expected


def test_an_htmx_older_page_is_just_rows_and_the_next_link(alice_client, usage, monkeypatch):
    monkeypatch.setattr(dashboards, "LOG_PAGE", 3)
    first = alice_client.get(URL).content.decode()
    older = OLDER.search(first).group(1).replace("&amp;", "&")
    response = alice_client.get(older, headers=HX)
    page = response.content.decode()
    assert page.lstrip().startswith('<tbody class="log-page">')
    assert 'id="log-more"' in page
    assert len(ROW.findall(page)) == 3
    assert "<html" not in page and 'id="usage-page"' not in page


def test_the_log_keeps_the_filters_across_pages(alice_client, usage, monkeypatch):
    monkeypatch.setattr(dashboards, "LOG_PAGE", 1)
    seen = _walk(alice_client, f"{URL}?model=mira", htmx=False)
    assert sorted(seen) == sorted(c.pk for c in usage["calls"] if c.model == "mira")


# ---------- one call ----------


def test_the_detail_view_shows_every_field_with_the_precise_cost(alice_client, usage):
    record = usage["calls"][1]
    response = alice_client.get(f"{URL}{record.request_id}/")
    assert response.status_code == 200
    page = response.content.decode()
    for value in (
        record.request_id,
        record.endpoint,
        record.model,
        record.node,
        "Backend",
        usage["backend"].masked,
        "Alice Archer",
        "API",
        "Chat",
        f"{record.tokens_in:,}",
        f"{record.tokens_out:,}",
        f"{record.latency_ms:,} ms",
        f"{record.cost:,} micro-units",
    ):
        assert value in page, value
    assert record.cost == 4_400  # 2,000 in and 800 out on mira-pro
    assert "$0.0044" in page


def test_a_call_billed_by_images_shows_its_images_instead_of_tokens(alice_client, acme):
    record = book(
        request_id=f"req_{uuid.uuid4().hex}", workspace_id=acme.pk, api_key_id=None,
        user_id=None, source="api", product="images", endpoint="/v1/images/generate",
        model="", node="sim-1", status=200, stream=False, tokens_in=0, tokens_out=0,
        units={"image": 3}, latency_ms=900, ttft_ms=None, error="", variant="high",
    )  # fmt: skip
    page = alice_client.get(f"{URL}{record.request_id}/").content.decode()
    stats = page[page.index("detail-stats") : page.index("call-fields-title")]
    assert "Images" in stats and ">3<" in stats and "Billed units" in stats
    assert "Tokens in" not in stats


def test_the_log_links_to_each_calls_detail(alice_client, usage):
    page = alice_client.get(URL).content.decode()
    for record in usage["calls"]:
        assert f'href="{URL}{record.request_id}/"' in page


def test_a_failed_call_shows_its_error(alice_client, usage):
    failed = usage["calls"][2]
    page = alice_client.get(f"{URL}{failed.request_id}/").content.decode()
    assert "502" in page and "closed the connection" in page


def test_an_unknown_request_id_is_a_404(alice_client, usage):
    assert alice_client.get(f"{URL}req_nothing/").status_code == 404


def test_another_workspaces_request_id_is_a_404(alice_client, usage, charlie, globex):
    theirs = _call(globex, user=charlie, charge=False)
    assert alice_client.get(f"{URL}{theirs.request_id}/").status_code == 404
    assert theirs.request_id not in alice_client.get(URL).content.decode()


# ---------- who may see it ----------


@pytest.mark.parametrize("role", list(Role))
def test_every_role_sees_usage_including_viewers(usage, member_of_acme, role):
    client = signed_in(member_of_acme(role))
    record = usage["calls"][0]
    assert client.get(URL).status_code == 200
    assert client.get(CSV_URL).status_code == 200
    assert client.get(f"{URL}{record.request_id}/").status_code == 200


def test_charlie_gets_404_for_acmes_page_csv_and_detail(charlie_client, usage):
    record = usage["calls"][0]
    assert charlie_client.get(URL).status_code == 404
    assert charlie_client.get(CSV_URL).status_code == 404
    assert charlie_client.get(f"{URL}{record.request_id}/").status_code == 404


def test_charlie_sees_only_globex_usage(charlie_client, charlie, globex, usage):
    _call(globex, user=charlie, charge=False)
    response = charlie_client.get("/w/globex/usage/")
    assert _shown(response)["requests"] == 1
    rows = _csv(charlie_client.get("/w/globex/usage/export.csv"))
    assert sum(int(r["requests"]) for r in rows) == 1


def test_signed_out_visitors_are_sent_to_sign_in(client, usage):
    response = client.get(URL)
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


# ---------- bad input ----------

BAD = {
    "from=notadate": "The start date “notadate” is not a date like",
    "to=2025-13-40": "The end date “2025-13-40” is not a date like",
    "key=0b7e5f4c-2d1a-4c3e-9f60-8a1b2c3d4e5f": "There is no API key",
    "key=not-a-key": "There is no API key “not-a-key” in this workspace.",
    "member=999999": "There is no member “999999” in this workspace.",
    "product=teleport": "Unknown product “teleport”.",
    "source=fax": "Unknown source “fax”",
    "range=forever": "Unknown date range “forever”",
    "group=colour": "Charts can be grouped by model or by product.",
    "from=2025-03-10&to=2025-03-01": "The start date is after the end date.",
    "from=2020-01-01&to=2025-01-01": "Choose a range of at most 366 days.",
    "cursor=garbage": "That page of the request log does not exist",
    "cursor=1_2_3": "That page of the request log does not exist",
    "model=" + "m" * 200: "at most 128 characters",
}


@pytest.mark.parametrize("query", list(BAD))
def test_bad_filter_input_gets_a_clear_message_not_a_500(alice_client, usage, query):
    page = alice_client.get(f"{URL}?{query}")
    assert page.status_code == 400
    assert BAD[query] in page.content.decode()
    assert "These filters cannot be applied." in page.content.decode()
    htmx = alice_client.get(f"{URL}?{query}", headers=HX)
    assert htmx.status_code == 400
    assert BAD[query] in htmx.content.decode()
    export = alice_client.get(f"{CSV_URL}?{query}")
    assert export.status_code == 400
    assert export["Content-Type"].startswith("text/plain")
    assert BAD[query] in export.content.decode()


def test_a_key_of_another_workspace_is_refused_as_a_filter(alice_client, usage, charlie, globex):
    theirs, _ = create_key(workspace=globex, name="Globex key", created_by=charlie)
    response = alice_client.get(f"{URL}?key={theirs.pk}")
    assert response.status_code == 400
    assert "Globex key" not in response.content.decode()


# ---------- latency percentiles ----------


def test_latency_percentiles_interpolate_like_percentile_cont(acme, alice):
    for ms in (100, 200, 300, 400, 1000):
        _call(acme, user=alice, latency_ms=ms, charge=False)
    data = {"start": timezone.now().date(), "end": timezone.now().date()}
    found = dashboards.latency_percentiles(acme, data)
    assert found.p50 == 300
    assert found.p95 == pytest.approx(880)
    assert found.sample is None


def test_latency_percentiles_use_a_bounded_sample_of_the_newest_calls(acme, alice, monkeypatch):
    # The sample is what SQLite uses; PostgreSQL's exact percentiles are tested above.
    monkeypatch.setattr(dashboards, "LATENCY_SAMPLE", 3)
    now = timezone.now()
    for i, ms in enumerate((9000, 9000, 10, 20, 30)):  # the two oldest are left out
        _call(acme, user=alice, latency_ms=ms, at=now - timedelta(minutes=10 - i), charge=False)
    # From the day of the oldest call: shortly after midnight, that is yesterday.
    data = {"start": (now - timedelta(minutes=10)).date(), "end": now.date()}
    found = dashboards.sampled_latency_percentiles(acme, data)
    assert (found.p50, found.sample) == (20, 3)


def test_a_selective_filter_examines_only_the_newest_calls_of_the_range(acme, alice, monkeypatch):
    monkeypatch.setattr(dashboards, "LATENCY_SCAN", 4)
    now = timezone.now()
    for i, (model, ms) in enumerate(
        [("mira-max", 5000), ("mira", 10), ("mira", 20), ("mira-max", 300), ("mira-max", 100)]
        + [("mira", 30)] * 2
    ):
        _call(acme, user=alice, model=model, latency_ms=ms, at=now - timedelta(minutes=10 - i))
    data = {"start": (now - timedelta(minutes=10)).date(), "end": now.date(), "model": "mira-max"}
    found = dashboards.sampled_latency_percentiles(acme, data)
    # Only the newest four calls are examined; the two mira-max calls among them count.
    assert (found.p50, found.sample) == (200, 2)


def test_a_range_longer_than_the_scan_gets_sampled_percentiles_on_every_database(
    acme, alice, monkeypatch
):
    # Exact percentiles over millions of calls took seconds on PostgreSQL too.
    monkeypatch.setattr(dashboards, "LATENCY_SCAN", 3)
    now = timezone.now()
    for i, ms in enumerate((9000, 9000, 10, 20, 30)):
        _call(acme, user=alice, latency_ms=ms, at=now - timedelta(minutes=10 - i), charge=False)
    data = {"start": (now - timedelta(minutes=10)).date(), "end": now.date()}
    found = dashboards.latency_percentiles(acme, data)
    # The calls from the cut-off on (9000, 10, 20 and 30 ms), not all five (median 30 ms).
    assert found.sample == 4 and found.p50 == 25


# ---------- with seeded history ----------


def test_the_page_agrees_with_seeded_records(alice_client, acme):
    call_command("seedusage", records=600, workspace="acme", days=20, seed=3, stdout=io.StringIO())
    records = UsageRecord.objects.filter(workspace=acme)
    expected = records.aggregate(n=Count("id"), cost=Sum("cost"), tin=Sum("tokens_in"))
    shown = _shown(alice_client.get(f"{URL}?range=30d"))
    assert (shown["requests"], shown["spend"], shown["tokens_in"]) == (
        expected["n"],
        expected["cost"],
        expected["tin"],
    )
    rows = _csv(alice_client.get(f"{CSV_URL}?range=30d&group=product"))
    assert sum(int(r["requests"]) for r in rows) == 600
