"""The gateway's Prometheus metrics, served at /metrics (gateway.health) and read by the
Fleet page.

Calls are counted once booked (`pipeline.Call.finish`, through gateway.calllog):
requests by product, model, status and source, the tokens and cost, the time the
gateway added to each and the time spent waiting for the upstream. Streams and
realtime sessions are counted while they are open. What a scrape can read for itself
(the upstream nodes as this worker sees them, the job runner's queue) is read then.

With several worker processes, prometheus-client's multi-process mode adds them up:
`PROMETHEUS_MULTIPROC_DIR` names a directory, empty when the workers start, that every
worker writes its values to, set before this module is first imported (`manage.py
serve` does). Without it, the values are this process's alone.

Calls are counted off their path, by gateway.calllog's thread (and before each scrape);
the label values' children are kept in a dict (one lookup per call instead of
prometheus-client's own, which takes a lock). With several workers, that thread also
keeps this worker's booking figures fresh for the scrapes other workers answer.
"""

import logging
import os
import time
from bisect import bisect_left

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

logger = logging.getLogger(__name__)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Label sets kept per product and model; models beyond this are counted as "other", so
# that callers naming many models cannot grow the metrics without end.
MAX_SERIES = 2000

REQUESTS = Counter(
    "mira_requests",
    "Model calls answered, by product, model, status and source (api or playground).",
    ["product", "model", "status", "source"],
)
TOKENS = Counter(
    "mira_tokens", "Tokens of answered calls, by direction (in, out).",
    ["product", "model", "direction"],
)  # fmt: skip
COST = Counter(
    "mira_cost_micro_units",
    "What answered calls cost at the current prices, in micro-units of the billing currency.",
    ["product", "model"],
)
ADDED = Histogram(
    "mira_gateway_added_seconds",
    "Time the gateway added to a call: before it went upstream, and after the answer "
    "(for a stream, until its first event).",
    ["product"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
UPSTREAM = Histogram(
    "mira_upstream_seconds",
    "Time a call waited for the upstream: its whole answer, or a stream's first event.",
    ["product"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
REFUSED = Counter(
    "mira_refused",
    "/v1 requests answered with an error before any model call started (a bad or missing "
    "key, a rate limit, a bad body...), by status.",
    ["status"],
)
OPEN_STREAMS = Gauge(
    "mira_open_streams", "Streamed answers being relayed now.", multiprocess_mode="livesum"
)
REALTIME_SESSIONS = Gauge(
    "mira_realtime_sessions", "Realtime sessions open now.", multiprocess_mode="livesum"
)
BOOKING_QUEUE = Gauge(
    "mira_booking_queue_depth",
    "Answered calls waiting to be written to the database.",
    multiprocess_mode="livesum",
)
JOURNAL_LAG = Gauge(
    "mira_journal_lag_seconds",
    "Age of the oldest answered call not yet written to the database (kept in the journal).",
    multiprocess_mode="livemax",
)

_children: dict[tuple[str, str, int, str], tuple] = {}


def _series(product: str, model: str, status: int, source: str) -> tuple:
    key = (product, model, status, source)
    series = _children.get(key)
    if series is None:
        if len(_children) >= MAX_SERIES:
            model = "other"
            key = (product, model, status, source)
            series = _children.get(key)
            if series is not None:
                return series
        series = _children[key] = (
            REQUESTS.labels(product, model, str(status), source),
            TOKENS.labels(product, model, "in"),
            TOKENS.labels(product, model, "out"),
            COST.labels(product, model),
        )
    return series


def observe_calls(calls: list[tuple]) -> None:
    """Count finished calls, each `(product, model, status, source, tokens_in, tokens_out,
    cost or None, added seconds, upstream seconds or None)`: summed first, so that a
    busy worker's batch costs one update per label set rather than several per call."""
    totals: dict[tuple, list] = {}
    timings: dict[str, tuple[list[float], list[float]]] = {}
    for product, model, status, source, tokens_in, tokens_out, cost, added, upstream in calls:
        key = (product, model, status, source)
        sums = totals.get(key)
        if sums is None:
            sums = totals[key] = [0, 0, 0, 0]
        sums[0] += 1
        sums[1] += tokens_in
        sums[2] += tokens_out
        sums[3] += cost or 0
        times = timings.get(product)
        if times is None:
            times = timings[product] = ([], [])
        times[0].append(added)
        if upstream is not None:
            times[1].append(upstream)
    for key, (count, tokens_in, tokens_out, cost) in totals.items():
        requests, tokens_in_, tokens_out_, cost_ = _series(*key)
        requests.inc(count)
        if tokens_in:
            tokens_in_.inc(tokens_in)
        if tokens_out:
            tokens_out_.inc(tokens_out)
        if cost:
            cost_.inc(cost)
    for product, (added, upstream) in timings.items():
        _observe_all(_histograms(product, ADDED), added)
        if upstream:
            _observe_all(_histograms(product, UPSTREAM), upstream)


def _observe_all(histogram, values: list[float]) -> None:
    """`histogram.observe` for each value, in one update of each bucket and of the sum."""
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # bounds end with +Inf: always one
    histogram._sum.inc(sum(values))
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


_histogram_children: dict[tuple[str, str], Histogram] = {}


def _histograms(product: str, family: Histogram) -> Histogram:
    key = (family._name, product)
    child = _histogram_children.get(key)
    if child is None:
        child = _histogram_children[key] = family.labels(product)
    return child


_refused: dict[int, Counter] = {}


def refused(status: int) -> None:
    child = _refused.get(status)
    if child is None:
        child = _refused[status] = REFUSED.labels(str(status))
    child.inc()


def note_books(queued: int, oldest: float | None) -> None:
    """This worker's booking queue: its length and when its oldest call was answered
    (`time.time()`), or None when it is empty."""
    BOOKING_QUEUE.set(queued)
    JOURNAL_LAG.set(max(0.0, time.time() - oldest) if oldest is not None else 0.0)


class _ReadAtScrape:
    """What a scrape reads for itself: the nodes as this worker sees them, the job queue."""

    def describe(self):
        return []  # registering must not read the database (it is read at each scrape)

    def collect(self):
        from upstream.fleet import get_fleet

        healthy = GaugeMetricFamily(
            "mira_upstream_node_healthy",
            "Whether an upstream node takes calls (1) or is ejected (0), as this worker sees it.",
            labels=["node"],
        )
        in_flight = GaugeMetricFamily(
            "mira_upstream_node_in_flight",
            "Calls in flight to an upstream node from this worker.",
            labels=["node"],
        )
        ejections = CounterMetricFamily(
            "mira_upstream_ejections",
            "Times an upstream node was ejected after failing, as this worker saw it.",
            labels=["node"],
        )
        for node in get_fleet().nodes:
            healthy.add_metric([node.name], 1.0 if node.healthy else 0.0)
            in_flight.add_metric([node.name], float(node.outstanding))
            ejections.add_metric([node.name], float(node.ejections))
        yield healthy
        yield in_flight
        yield ejections
        queued, due = _job_queue()
        if queued is not None:
            yield GaugeMetricFamily(
                "mira_job_queue_depth", "Music and video jobs not yet settled.", value=queued
            )
            yield GaugeMetricFamily(
                "mira_job_queue_due", "Unsettled jobs due for a poll now.", value=due
            )


def _job_queue() -> tuple[int | None, int]:
    """(unsettled jobs, those due for a poll); (None, 0) when the database cannot say."""
    from django.db import DatabaseError
    from django.utils import timezone

    from gateway.models import Job

    try:
        unsettled = Job.objects.unsettled()
        return unsettled.count(), unsettled.filter(next_poll_at__lte=timezone.now()).count()
    except DatabaseError:
        return None, 0


_scraped = _ReadAtScrape()
if not MULTIPROCESS:
    REGISTRY.register(_scraped)


def registry() -> CollectorRegistry:
    """The registry to report: every worker's values added up in multi-process mode."""
    if not MULTIPROCESS:
        return REGISTRY
    from prometheus_client import multiprocess

    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    combined.register(_scraped)
    return combined


def refresh() -> None:
    """Bring this worker's booking figures up to date (before a scrape)."""
    from console import books

    queued, oldest = books.backlog()
    note_books(queued, oldest)


def _bring_up_to_date() -> None:
    from gateway import calllog

    calllog.drain()
    refresh()


def render() -> bytes:
    """The metrics in Prometheus's text format (synchronous: it may query the database)."""
    _bring_up_to_date()
    return generate_latest(registry())


def snapshot() -> dict[str, float]:
    """Each metric's samples added up (all labels, all workers), by sample name: what
    the Fleet page shows, from the same registry as /metrics."""
    _bring_up_to_date()
    totals: dict[str, float] = {}
    for family in registry().collect():
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket")):
                continue
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def process_ended(pid: int) -> None:
    """Drop a gone worker's live gauges (multi-process mode)."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
