"""What the playground's pages that keep runs share: the code view of a run or of the form,
and deleting a run from the history."""

from collections.abc import Callable
from typing import Any

from django import forms
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django_htmx.http import HttpResponseClientRedirect

from playground.code import Snippet


def form_errors(form: forms.Form) -> str:
    """A form's errors in one line, for the code view of a form not filled in yet."""
    return "Fill in the form first: " + " ".join(
        str(e) for errors in form.errors.values() for e in errors
    )


def code_view(
    request: HttpRequest,
    *,
    template: str,
    form_class: type[forms.Form],
    saved: Callable[[HttpRequest, Any], Any],
    snippets: Callable[[dict, str], list[Snippet]],
    **context: Any,
) -> HttpResponse:
    """A saved run's exact request as code (GET `?run=`, the member's own), or the request
    the form would send now (POST); the form's errors when it would send nothing."""
    if request.method == "GET":
        body = saved(request, request.GET.get("run")).request
    else:
        form = form_class(request.POST)
        if not form.is_valid():
            return render(request, template + "#code", {"code_error": form_errors(form)})
        body = form.body()
    base_url = request.build_absolute_uri("/v1").rstrip("/")
    context["snippets"] = snippets(body, base_url)
    return render(request, template + "#code", context)


def delete_run(
    request: HttpRequest,
    run: models.Model,
    *,
    page: str,
    template: str,
    history: Callable[[HttpRequest], dict],
) -> HttpResponse:
    """Delete a run: the page starts afresh if it was the one open, else the history is
    drawn again without it."""
    was_open = request.POST.get("open") == str(run.pk)
    run.delete()
    if was_open:
        return HttpResponseClientRedirect(reverse(page, args=[request.workspace.slug]))
    return render(request, template + "#history", history(request))
