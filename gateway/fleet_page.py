"""The staff-only Fleet page: each upstream node as this worker sees it."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from upstream.fleet import get_fleet


@login_required
def fleet(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise Http404("No such page.")
    current = get_fleet()
    context = {"nodes": current.state(), "is_simulator": current.is_simulator}
    template = "gateway/fleet.html#nodes" if request.htmx else "gateway/fleet.html"
    return render(request, template, context)
