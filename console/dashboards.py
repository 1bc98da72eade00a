"""The usage dashboard: what a workspace's calls cost and how they went, day by day.

Charts and totals are read from UsageRollup (one row per UTC day and dimension), never
from the raw records, so they cost the same however many calls a day brings. Raw
records are read only for the request log (keyset pagination on the
(workspace, -created_at) index), one call's detail, and the latency percentiles
(see `latency_percentiles`).
"""

import csv
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Aggregate, FloatField, Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django_htmx.http import push_url

from accounts.access import workspace_view
from accounts.models import Membership, Workspace
from console.models import ApiKey, Product, Source, Unit, UsageRecord, UsageRollup
from console.pricing import MICRO, format_money

RANGES = {  # value -> (label, days; None when the dates decide)
    "7d": ("Last 7 days", 7),
    "30d": ("Last 30 days", 30),
    "90d": ("Last 90 days", 90),
    "month": ("This month", None),
    "custom": ("Custom range", None),
}
DEFAULT_RANGE = "30d"
MAX_DAYS = 366
GROUPS = {"model": "Model", "product": "Product"}
DEFAULT_GROUP = "model"
TOP_GROUPS = 6  # groups beyond these are stacked as "Other" in the charts (not in the CSV)
LOG_PAGE = 50
# Latency percentiles over a range of more than LATENCY_SCAN calls, and on databases without
# percentile_cont, come from a bounded sample: the calls that match the filters among the
# range's newest LATENCY_SCAN calls (found along the (workspace, -created_at) index), at
# most LATENCY_SAMPLE of them.
LATENCY_SCAN = 50_000
LATENCY_SAMPLE = 20_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

PRODUCT_LABELS = dict(Product.choices)
SOURCE_LABELS = dict(Source.choices)


# ---------- filters ----------


class DayField(forms.DateField):
    """A date as YYYY-MM-DD, whose error message can quote what was typed."""

    def to_python(self, value):
        try:
            return super().to_python(value)
        except ValidationError:
            raise ValidationError(
                self.error_messages["invalid"], code="invalid", params={"value": value}
            ) from None


class UsageFilters(forms.Form):
    """What the page shows: a range of UTC days, optional dimension filters, the grouping."""

    range = forms.ChoiceField(
        required=False,
        choices=[(value, label) for value, (label, _) in RANGES.items()],
        error_messages={
            "invalid_choice": "Unknown date range “%(value)s”: choose one from the list."
        },
    )
    key = forms.ChoiceField(
        required=False,
        error_messages={"invalid_choice": "There is no API key “%(value)s” in this workspace."},
    )
    member = forms.ChoiceField(
        required=False,
        error_messages={"invalid_choice": "There is no member “%(value)s” in this workspace."},
    )
    model = forms.CharField(required=False, max_length=128)
    product = forms.ChoiceField(
        required=False,
        choices=[("", "All products"), *Product.choices],
        error_messages={"invalid_choice": "Unknown product “%(value)s”."},
    )
    source = forms.ChoiceField(
        required=False,
        choices=[("", "API and playground"), *Source.choices],
        error_messages={"invalid_choice": "Unknown source “%(value)s”: use api or playground."},
    )
    group = forms.ChoiceField(
        required=False,
        choices=list(GROUPS.items()),
        error_messages={"invalid_choice": "Charts can be grouped by model or by product."},
    )
    cursor = forms.CharField(required=False, max_length=64)

    def __init__(self, data, *, workspace: Workspace, today: date) -> None:
        super().__init__(data)
        self.today = today
        # `from` is a Python keyword, so the two dates are added by name.
        for name, which in (("from", "start"), ("to", "end")):
            self.fields[name] = DayField(
                required=False,
                input_formats=["%Y-%m-%d"],
                error_messages={
                    "invalid": f"The {which} date “%(value)s” is not a date like 2025-03-31."
                },
            )
        self.keys = list(ApiKey.objects.for_workspace(workspace).order_by("name", "created_at"))
        self.fields["key"].choices = [("", "All keys")] + [
            (str(key.pk), f"{key.name} ({key.masked}){'' if key.is_active else ' · ' + key.status}")
            for key in self.keys
        ]
        members = (
            Membership.objects.for_workspace(workspace)
            .select_related("user")
            .order_by("user__name", "user__email")
        )
        self.fields["member"].choices = [("", "All members")] + [
            (str(m.user_id), m.user.display_name) for m in members
        ]

    def clean_cursor(self) -> tuple[datetime, int] | None:
        value = self.cleaned_data["cursor"]
        if not value:
            return None
        micros, _, pk = value.partition("_")
        if not (micros.isdigit() and pk.isdigit()) or len(micros) > 18:
            raise ValidationError(
                "That page of the request log does not exist (the link is broken). "
                "Start again from the newest calls."
            )
        return EPOCH + timedelta(microseconds=int(micros)), int(pk)

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        chosen = data.get("range") or ""
        start, end = data.get("from"), data.get("to")
        if chosen in ("", "custom") and (start or end):
            chosen = "custom"
        chosen = chosen or DEFAULT_RANGE
        if chosen == "custom":
            end = end or self.today
            start = start or end - timedelta(days=29)
            if start > end:
                raise ValidationError("The start date is after the end date.")
            if (end - start).days >= MAX_DAYS:
                raise ValidationError(f"Choose a range of at most {MAX_DAYS} days.")
        elif chosen == "month":
            start, end = self.today.replace(day=1), self.today
        else:
            start, end = self.today - timedelta(days=RANGES[chosen][1] - 1), self.today
        data.update(range=chosen, start=start, end=end, group=data.get("group") or DEFAULT_GROUP)
        return data

    def messages(self) -> list[str]:
        """The errors as sentences, for the alert above the page."""
        return [message for errors in self.errors.values() for message in errors]


def _filters(request: HttpRequest) -> UsageFilters:
    return UsageFilters(request.GET, workspace=request.workspace, today=timezone.now().date())


def _query(data: dict, **changes: str) -> str:
    """The query string for these filters (defaults left out), with some values changed."""
    params = {
        "range": "" if data["range"] == DEFAULT_RANGE else data["range"],
        "from": data["start"].isoformat() if data["range"] == "custom" else "",
        "to": data["end"].isoformat() if data["range"] == "custom" else "",
        "key": data.get("key") or "",
        "member": data.get("member") or "",
        "model": data.get("model") or "",
        "product": data.get("product") or "",
        "source": data.get("source") or "",
        "group": "" if data["group"] == DEFAULT_GROUP else data["group"],
    } | changes
    return urlencode({name: value for name, value in params.items() if value})


def _with_query(url: str, query: str) -> str:
    return f"{url}?{query}" if query else url


def _dimensions(data: dict) -> dict:
    """The dimension filters, as lookups that UsageRollup and UsageRecord both understand."""
    found: dict = {}
    if data.get("key"):
        found["api_key_id"] = data["key"]
    if data.get("member"):
        found["user_id"] = int(data["member"])
    for name in ("model", "product", "source"):
        if data.get(name):
            found[name] = data[name]
    return found


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def rollups_for(workspace: Workspace, data: dict) -> QuerySet[UsageRollup]:
    return UsageRollup.objects.filter(
        workspace=workspace, day__range=(data["start"], data["end"]), **_dimensions(data)
    )


def records_for(
    workspace: Workspace,
    data: dict,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[UsageRecord]:
    """The range's calls that match the filters. `since` (inclusive) and `until` (inclusive)
    narrow the range itself rather than adding bounds: SQLite seeks its (workspace,
    created_at) index on one lower and one upper bound and checks any other row by row."""
    start, end = _day_start(data["start"]), _day_start(data["end"] + timedelta(days=1))
    bounds = {"created_at__gte": max(since, start) if since else start}
    if until and until < end:
        bounds["created_at__lte"] = until
    else:
        bounds["created_at__lt"] = end
    return UsageRecord.objects.for_workspace(workspace).filter(**bounds, **_dimensions(data))


# ---------- numbers for people ----------


def _compact(number: float) -> str:
    """12, 1.5k, 12.5k, 3.2M."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            return f"{number / size:.3g}{suffix}"
    return f"{number:.3g}" if number != int(number) else str(int(number))


def _short_money(micro: float) -> str:
    """Money for an axis: `$0.25`, `$12.50`, `$1.5k`; the currency sits where format_money puts it."""
    if abs(micro) >= 1_000 * MICRO:
        return format_money(0).replace("0.00", _compact(micro / MICRO))
    if micro == 0 or abs(micro) >= 10_000:
        return format_money(round(micro))
    return format_money(round(micro), precise=True)


def _duration(ms: float | None) -> str:
    if ms is None:
        return "–"
    if ms >= 1000:
        return f"{ms / 1000:.2g} s" if ms < 10_000 else f"{ms / 1000:.0f} s"
    return f"{ms:.0f} ms"


def _percent(value: float) -> str:
    return f"{value:.2g}%" if value < 10 else f"{value:.0f}%"


def _day_label(day: date) -> str:
    return f"{day:%b} {day.day}"


def _long_day(day: date) -> str:
    return f"{day:%a}, {day:%b} {day.day}, {day.year}"


def _decimal(micro: int) -> str:
    """Micro-units as an exact decimal string for spreadsheets: `12.345678`."""
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{fraction:06d}"


def _cell(text: str) -> str:
    """A text cell a spreadsheet will not run: model names come from API callers."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _group_label(group: str, value: str) -> str:
    if group == "product":
        return PRODUCT_LABELS.get(value, value or "(none)")
    return value or "(no model)"


# ---------- charts (server-rendered SVG) ----------

PLOT_TOP = 10
PLOT_HEIGHT = 180
CHART_HEIGHT = PLOT_TOP + PLOT_HEIGHT + 24  # room for the day labels under the plot


@dataclass
class Chart:
    """What the chart partial draws: bars of stacked segments, y ticks, day labels, a legend."""

    title: str
    bars: list[dict] = field(default_factory=list)
    ticks: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    legend: list[dict] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)
    height: int = CHART_HEIGHT
    baseline: int = PLOT_TOP + PLOT_HEIGHT
    label_y: int = CHART_HEIGHT - 4


def _step(peak: float, *, whole: bool) -> float:
    """A round tick step that splits 0..peak into at most four intervals."""
    raw = peak / 4
    if whole and raw <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5, 10):
        if raw <= multiple * magnitude:
            return multiple * magnitude
    return 10 * magnitude


def _y(value: float, top: float) -> float:
    return PLOT_TOP + PLOT_HEIGHT - value / top * PLOT_HEIGHT


def _chart(
    title: str,
    days: list[date],
    series: list[tuple[str, str]],
    values: list[list[float]],
    fmt: Callable[[float], str],
    *,
    whole: bool = False,
    note: Callable[[int], str] | None = None,
    lines: list[tuple[str, float]] = (),
) -> Chart:
    """Stacked bars, one per day. `series` is [(name, css class)], `values[day][series]`.

    Geometry is in percent across (so the SVG fills any width without stretching text)
    and in pixels down. Each segment carries its own <title> for a tooltip.
    """
    chart = Chart(title=title)
    totals = [sum(row) for row in values]
    peak = max([*totals, *(value for _, value in lines)], default=0)
    step = _step(peak, whole=whole) if peak > 0 else 1
    top = step * max(1, math.ceil(peak / step - 1e-9))
    chart.ticks = [
        {"y": f"{_y(step * i, top):.1f}", "label": fmt(step * i)}
        for i in range(int(round(top / step)) + 1)
    ]
    slot = 100 / max(len(days), 1)
    width = slot * (0.72 if len(days) <= 45 else 0.8)
    for index, (day, row, total) in enumerate(zip(days, values, totals, strict=True)):
        segments, bottom = [], 0.0
        for (name, css), value in zip(series, row, strict=True):
            if value <= 0:
                continue
            y_top, y_bottom = _y(bottom + value, top), _y(bottom, top)
            bottom += value
            title_lines = [_long_day(day)]
            title_lines.append(f"{name}: {fmt(value)}" if len(series) > 1 else fmt(value))
            if len(series) > 1:
                title_lines.append(f"Day total: {fmt(total)}")
            if note:
                title_lines.append(note(index))
            segments.append(
                {
                    "css": css,
                    "y": f"{y_top:.2f}",
                    # A sliver of a segment still shows, so that a tooltip can be found.
                    "height": f"{max(y_bottom - y_top, 0.75):.2f}",
                    "title": "\n".join(title_lines),
                }
            )
        chart.bars.append(
            {
                "x": f"{index * slot + (slot - width) / 2:.3f}",
                "width": f"{width:.3f}",
                "segments": segments,
            }
        )
    every = max(1, math.ceil(len(days) / 7))
    for index, day in enumerate(days):
        back = len(days) - 1 - index
        if back % every == 0:
            # Every other label is "minor": phones leave it out to make room.
            minor = (back // every) % 2 == 1
            x = f"{(index + 0.5) * slot:.3f}"
            chart.labels.append({"x": x, "text": _day_label(day), "minor": minor})
    chart.lines = [
        {"y": f"{_y(value, top):.1f}", "label": f"{name} of the range: {fmt(value)}", "css": name}
        for name, value in lines
        if value
    ]
    return chart


# ---------- the numbers ----------


@dataclass
class Summary:
    """Totals and per-day charts for one range and set of filters, read from the rollups."""

    days: list[date]
    group: str
    requests: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: int = 0
    latency_total: int = 0
    rows: list[dict] = field(default_factory=list)  # one per day and group, for the CSV

    @property
    def error_rate(self) -> float:
        return 100 * self.errors / self.requests if self.requests else 0.0

    @property
    def average_latency(self) -> float | None:
        return self.latency_total / self.requests if self.requests else None


def summarize(rollups: QuerySet[UsageRollup], *, group: str, start: date, end: date) -> Summary:
    """One GROUP BY over the rollups: a row per day and group, summed. By model, a call
    an alias served is its own group, "asked → served"."""
    columns = ("day", group, "model_asked") if group == "model" else ("day", group)
    rows = list(
        rollups.values(*columns)
        .annotate(
            n=Sum("requests"),
            err=Sum("errors"),
            tin=Sum("tokens_in"),
            tout=Sum("tokens_out"),
            spend=Sum("cost"),
            latency=Sum("latency_ms_total"),
        )
        .order_by("day", group)
    )
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    summary = Summary(days=days, group=group)
    for row in rows:
        row["group"] = row[group]
        if row.get("model_asked"):
            row["group"] = f"{row['model_asked']} → {row[group]}"
        summary.requests += row["n"]
        summary.errors += row["err"]
        summary.tokens_in += row["tin"]
        summary.tokens_out += row["tout"]
        summary.cost += row["spend"]
        summary.latency_total += row["latency"]
    summary.rows = rows
    return summary


def _series(summary: Summary) -> tuple[list[tuple[str, str]], dict[str, int], dict[str, dict]]:
    """The groups to stack, biggest spender first: [(label, css)], a map from group value to
    series index (small groups share "Other"), and each series' totals for the legend."""
    spend: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in summary.rows:
        spend[row["group"]][0] += row["spend"]
        spend[row["group"]][1] += row["n"]
    ranked = sorted(spend, key=lambda g: (-spend[g][0], -spend[g][1], g))
    shown = ranked if len(ranked) <= TOP_GROUPS + 1 else ranked[:TOP_GROUPS]
    series = [(_group_label(summary.group, g), f"s-{i}") for i, g in enumerate(shown)]
    index = {g: i for i, g in enumerate(shown)}
    if len(shown) < len(ranked):
        series.append((f"Other ({len(ranked) - len(shown)})", "s-other"))
        index |= {g: len(shown) for g in ranked[len(shown) :]}
    totals: dict[str, dict] = defaultdict(lambda: {"spend": 0, "requests": 0})
    for g, (cost, requests) in spend.items():
        name = series[index[g]][0]
        totals[name]["spend"] += cost
        totals[name]["requests"] += requests
    return series, index, totals


def charts_for(summary: Summary, percentiles: "Latency") -> dict[str, Chart]:
    """The five charts of the page, from one summary and the latency percentiles."""
    days = summary.days
    position = {day: i for i, day in enumerate(days)}
    series, index, totals = _series(summary)
    spend = [[0] * len(series) for _ in days]
    requests = [[0] * len(series) for _ in days]
    per_day = [{"n": 0, "err": 0, "tin": 0, "tout": 0, "latency": 0} for _ in days]
    for row in summary.rows:
        d, s = position[row["day"]], index[row["group"]]
        spend[d][s] += row["spend"]
        requests[d][s] += row["n"]
        for name in per_day[d]:
            per_day[d][name] += row[name]

    def calls(i: int) -> str:
        n = per_day[i]["n"]
        return f"{n:,} request{'s' if n != 1 else ''}"

    charts = {
        "spend": _chart("Spend per day", days, series, spend, _short_money),
        "requests": _chart("Requests per day", days, series, requests, _compact, whole=True),
        "tokens": _chart(
            "Tokens per day",
            days,
            [("Input", "s-in"), ("Output", "s-out")],
            [[day["tin"], day["tout"]] for day in per_day],
            _compact,
            whole=True,
        ),
        "errors": _chart(
            "Error rate per day",
            days,
            [("Error rate", "s-err")],
            [[100 * day["err"] / day["n"] if day["n"] else 0] for day in per_day],
            _percent,
            note=lambda i: f"{per_day[i]['err']:,} of {calls(i)} failed",
        ),
        "latency": _chart(
            "Average latency per day",
            days,
            [("Average latency", "s-lat")],
            [[day["latency"] / day["n"] if day["n"] else 0] for day in per_day],
            _duration,
            note=calls,
            lines=[("p50", percentiles.p50 or 0), ("p95", percentiles.p95 or 0)],
        ),
    }
    charts["spend"].legend = [
        {"name": label, "css": css, "value": _short_money(totals[label]["spend"])}
        for label, css in series
    ]
    charts["requests"].legend = [
        {"name": label, "css": css, "value": f"{totals[label]['requests']:,}"}
        for label, css in series
    ]
    charts["latency"].legend = [
        {"name": "Average", "css": "s-lat", "value": _duration(summary.average_latency)},
        {"name": "p50", "css": "is-line p50", "value": _duration(percentiles.p50)},
        {"name": "p95", "css": "is-line p95", "value": _duration(percentiles.p95)},
    ]
    charts["tokens"].legend = [
        {"name": "Input", "css": "s-in", "value": _compact(summary.tokens_in)},
        {"name": "Output", "css": "s-out", "value": _compact(summary.tokens_out)},
    ]
    return charts


# ---------- latency percentiles ----------


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate: the interpolated percentile of a column."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float, **extra) -> None:
        super().__init__(expression, fraction=float(fraction), **extra)


@dataclass
class Latency:
    p50: float | None = None
    p95: float | None = None
    sample: int | None = None  # how many calls they were computed from, when sampled


def _interpolated(values: list[int], fraction: float) -> float:
    """The same percentile as percentile_cont: linear between the two nearest ranks."""
    position = fraction * (len(values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def latency_percentiles(workspace: Workspace, data: dict) -> Latency:
    """p50 and p95 of latency over the range's calls that match the filters.

    Exact over a range of at most LATENCY_SCAN calls (on PostgreSQL with percentile_cont);
    over a longer range, or on databases without percentile_cont (SQLite), a bounded
    sample. The created_at of the range's LATENCY_SCAN-th newest call (unfiltered: an
    index-only OFFSET) becomes the start of the range, so that however long the range and
    however selective the filters, at most LATENCY_SCAN rows are examined: an exact
    percentile over ten million rows took seconds. The percentiles are then computed here
    over the newest matching calls from there (at most LATENCY_SAMPLE), and `sample` says
    how many they were.
    """
    cutoff = _latency_cutoff(workspace, data)
    if cutoff is None and connection.vendor == "postgresql":
        found = records_for(workspace, data).aggregate(
            p50=PercentileCont("latency_ms", 0.5), p95=PercentileCont("latency_ms", 0.95)
        )
        return Latency(p50=found["p50"], p95=found["p95"])
    return sampled_latency_percentiles(workspace, data, cutoff=cutoff)


def _latency_cutoff(workspace: Workspace, data: dict) -> datetime | None:
    """The created_at of the range's LATENCY_SCAN-th newest call; None for fewer calls."""
    whole_range = records_for(workspace, {"start": data["start"], "end": data["end"]})
    return (
        whole_range.order_by("-created_at")
        .values_list("created_at", flat=True)[LATENCY_SCAN : LATENCY_SCAN + 1]
        .first()
    )


def sampled_latency_percentiles(
    workspace: Workspace, data: dict, *, cutoff: datetime | None | bool = False
) -> Latency:
    """The bounded sample of `latency_percentiles` (`cutoff` when already found)."""
    if cutoff is False:
        cutoff = _latency_cutoff(workspace, data)
    # The cut-off replaces the range's start rather than adding a second lower bound: SQLite
    # seeks the index on one bound only and would check the other row by row.
    records = records_for(workspace, data, since=cutoff)
    values = list(
        records.order_by("-created_at").values_list("latency_ms", flat=True)[: LATENCY_SAMPLE + 1]
    )
    sampled = cutoff is not None or len(values) > LATENCY_SAMPLE
    values = sorted(values[:LATENCY_SAMPLE])
    if not values:
        return Latency(sample=0 if sampled else None)
    return Latency(
        p50=_interpolated(values, 0.5),
        p95=_interpolated(values, 0.95),
        sample=len(values) if sampled else None,
    )


# ---------- the request log ----------


def cursor_of(record: UsageRecord) -> str:
    micros = (record.created_at - EPOCH) // timedelta(microseconds=1)
    return f"{micros}_{record.pk}"


def log_page(
    workspace: Workspace, data: dict, cursor: tuple[datetime, int] | None, size: int
) -> tuple[list[UsageRecord], str | None]:
    """One page of calls, newest first, after `cursor`: keyset pagination on (created_at, id),
    so a page costs the same however deep it is and no call is shown twice or skipped."""
    if cursor:
        moment, pk = cursor
        # The cursor's moment ends the range (an index bound); the id breaks ties at it.
        records = records_for(workspace, data, until=moment).filter(
            Q(created_at__lt=moment) | Q(pk__lt=pk)
        )
    else:
        records = records_for(workspace, data)
    page = list(
        records.select_related("api_key", "user").order_by("-created_at", "-pk")[: size + 1]
    )
    if len(page) > size:
        return page[:size], cursor_of(page[size - 1])
    return page, None


# ---------- views ----------

TEMPLATE = "console/usage.html"


def _usage_url(request: HttpRequest) -> str:
    return reverse("usage", args=[request.workspace.slug])


def _invalid(request: HttpRequest, form: UsageFilters) -> HttpResponse:
    """The filters again, as they were typed, with what is wrong with them (400)."""
    typed = request.GET
    chosen = typed.get("range") or ("custom" if typed.get("from") or typed.get("to") else "")
    context = {
        "form": form,
        "errors": form.messages(),
        "data": {
            "range": chosen if chosen in RANGES else DEFAULT_RANGE,
            "model": typed.get("model", ""),
            "group": typed.get("group") if typed.get("group") in GROUPS else DEFAULT_GROUP,
        },
        "ranges": [(value, label) for value, (label, _) in RANGES.items()],
        "models": [typed["model"]] if typed.get("model") else [],
        "reset_url": _usage_url(request),
    }
    template = TEMPLATE + "#usage-page" if request.htmx else TEMPLATE
    return render(request, template, context, status=400)


def _model_choices(workspace: Workspace, data: dict) -> list[str]:
    models = set(
        UsageRollup.objects.filter(workspace=workspace, day__range=(data["start"], data["end"]))
        .values_list("model", flat=True)
        .distinct()
    )
    if data.get("model"):
        models.add(data["model"])
    return sorted(m for m in models if m)


def _page_context(request: HttpRequest, form: UsageFilters) -> dict:
    workspace, data = request.workspace, form.cleaned_data
    query = _query(data)
    url = _usage_url(request)
    summary = summarize(
        rollups_for(workspace, data), **{k: data[k] for k in ("group", "start", "end")}
    )
    percentiles = latency_percentiles(workspace, data) if summary.requests else Latency()
    log, next_cursor = log_page(workspace, data, data["cursor"], LOG_PAGE)
    filtered = bool(_dimensions(data))
    return {
        "form": form,
        "data": data,
        "ranges": [(value, label) for value, (label, _) in RANGES.items()],
        "models": _model_choices(workspace, data),
        "summary": summary,
        "latency": percentiles,
        "latency_p50": _duration(percentiles.p50),
        "latency_p95": _duration(percentiles.p95),
        "average_latency": _duration(summary.average_latency),
        "error_rate": _percent(summary.error_rate) if summary.requests else "–",
        "tokens": {
            "total": summary.tokens_in + summary.tokens_out,
            "total_short": _compact(summary.tokens_in + summary.tokens_out),
            "in_short": _compact(summary.tokens_in),
            "out_short": _compact(summary.tokens_out),
        },
        "charts": charts_for(summary, percentiles) if summary.requests else None,
        "group_links": [
            {
                "value": value,
                "label": label,
                "url": _with_query(
                    url, _query(data, group="" if value == DEFAULT_GROUP else value)
                ),
                "active": value == data["group"],
            }
            for value, label in GROUPS.items()
        ],
        "range_label": RANGES[data["range"]][0],
        "period": f"{_long_day(data['start'])} – {_long_day(data['end'])}",
        "filtered": filtered,
        "has_any_usage": summary.requests > 0
        or UsageRollup.objects.filter(workspace=workspace).exists(),
        "query": query,
        "page_url": _with_query(url, query),
        "reset_url": url,
        "csv_url": _with_query(reverse("usage_export", args=[workspace.slug]), query),
        "log": log,
        "log_deep": data["cursor"] is not None,
        "older_url": _with_query(url, _query(data, cursor=next_cursor)) if next_cursor else "",
        "log_page_size": LOG_PAGE,
    }


@workspace_view("usage.view")
def usage(request: HttpRequest) -> HttpResponse:
    form = _filters(request)
    if not form.is_valid():
        return _invalid(request, form)
    htmx = request.htmx and not request.htmx.history_restore_request
    if htmx and form.cleaned_data["cursor"]:
        # "Older" in the request log: just the next page of rows.
        data = form.cleaned_data
        log, next_cursor = log_page(request.workspace, data, data["cursor"], LOG_PAGE)
        url = _with_query(_usage_url(request), _query(data, cursor=next_cursor or ""))
        context = {"log": log, "older_url": url if next_cursor else "", "query": _query(data)}
        return render(request, TEMPLATE + "#log-page", context)
    context = _page_context(request, form)
    if not htmx:
        return render(request, TEMPLATE, context)
    response = render(request, TEMPLATE + "#usage-page", context)
    # The address bar gets the filters as a link would have them, not the raw form.
    return push_url(response, context["page_url"])


@workspace_view("usage.view")
def usage_export(request: HttpRequest) -> HttpResponse:
    """The CSV of what the page shows: one row per day and group, with the same filters."""
    form = _filters(request)
    if not form.is_valid():
        return HttpResponse(
            "\n".join(form.messages()) + "\n", status=400, content_type="text/plain; charset=utf-8"
        )
    data = form.cleaned_data
    summary = summarize(
        rollups_for(request.workspace, data),
        group=data["group"],
        start=data["start"],
        end=data["end"],
    )
    name = f"usage-{request.workspace.slug}-{data['start']}-to-{data['end']}-by-{data['group']}.csv"
    response = HttpResponse(
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
    writer = csv.writer(response)
    writer.writerow(
        [
            "date",
            data["group"],
            "requests",
            "errors",
            "tokens_in",
            "tokens_out",
            f"spend_{settings.BILLING_CURRENCY.lower()}",
            "average_latency_ms",
        ]
    )
    for row in summary.rows:
        writer.writerow(
            [
                row["day"].isoformat(),
                _cell(row["group"]),
                row["n"],
                row["err"],
                row["tin"],
                row["tout"],
                _decimal(row["spend"]),
                round(row["latency"] / row["n"]) if row["n"] else 0,
            ]
        )
    return response


def _get_record_for_member(request: HttpRequest, request_id: str) -> UsageRecord:
    """A call of this workspace: another workspace's request id is a 404, like an unknown one."""
    records = UsageRecord.objects.for_workspace(request.workspace).select_related("api_key", "user")
    return get_object_or_404(records, request_id=request_id)


def _unit_label(unit: str) -> str:
    return str(dict(Unit.choices).get(unit, unit.replace("_", " ").capitalize()))


@workspace_view("usage.view")
def usage_detail(request: HttpRequest, request_id: str) -> HttpResponse:
    record = _get_record_for_member(request, request_id)
    back = _usage_url(request)
    query = request.GET.urlencode() if request.GET else ""
    units = sorted(record.units.items()) if isinstance(record.units, dict) else []
    # A call billed by other units than tokens (images, seconds, bytes) shows those first.
    unit_cards = (
        [(_unit_label(unit), quantity) for unit, quantity in units][:2]
        if units and not (record.tokens_in or record.tokens_out)
        else []
    )
    context = {
        "record": record,
        "units": units,
        "unit_cards": unit_cards,
        "product_label": PRODUCT_LABELS.get(record.product, record.product),
        "source_label": SOURCE_LABELS.get(record.source, record.source),
        "latency": _duration(record.latency_ms),
        "ttft": _duration(record.ttft_ms) if record.ttft_ms is not None else "",
        "back_url": _with_query(back, query),
        "day_url": _with_query(
            back,
            urlencode({"from": record.created_at.date(), "to": record.created_at.date()}),
        ),
    }
    return render(request, "console/usage_detail.html", context)
