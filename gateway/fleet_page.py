"""The staff-only Fleet page: each upstream node as this worker sees it, and the gateway's
figures from the same metrics that /metrics reports (every worker's, added up)."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from gateway import metrics
from upstream.fleet import get_fleet


@login_required
def fleet(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise Http404("No such page.")
    current = get_fleet()
    context = {
        "nodes": current.state(),
        "is_simulator": current.is_simulator,
        "figures": _figures(metrics.snapshot()),
    }
    template = "gateway/fleet.html#nodes" if request.htmx else "gateway/fleet.html"
    return render(request, template, context)


def _figures(totals: dict[str, float]) -> dict:
    """The figures the page shows, by the names of their metrics."""
    calls = totals.get("mira_requests_total", 0.0)
    added = totals.get("mira_gateway_added_seconds_sum", 0.0)
    added_count = totals.get("mira_gateway_added_seconds_count", 0.0)
    return {
        "calls": int(calls),
        "tokens": int(totals.get("mira_tokens_total", 0.0)),
        "added_ms": added / added_count * 1000 if added_count else None,
        "open_streams": int(totals.get("mira_open_streams", 0.0)),
        "realtime_sessions": int(totals.get("mira_realtime_sessions", 0.0)),
        "booking_queue": int(totals.get("mira_booking_queue_depth", 0.0)),
        "journal_lag": totals.get("mira_journal_lag_seconds", 0.0),
        "jobs": totals.get("mira_job_queue_depth"),
        "jobs_due": int(totals.get("mira_job_queue_due", 0.0)),
    }
