"""The Fetch page: a URL in, the page's main content out as rendered Markdown and as the raw
Markdown, with its length, how long it took and what it cost; "Send to chat" opens a chat
whose system prompt holds the page.

The call is `gateway.fetch.fetch` as the signed-in member, the same pipeline (and the same
guard against fetching anything inward) as `/v1/fetch`. A fetch that came back is kept as a
run with its exact request and the page, for the member's history; a refused one keeps
nothing. Runs and conversations are the member's own: every lookup starts from the
workspace and the member.
"""

import time

from asgiref.sync import sync_to_async
from django import forms
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from accounts.access import workspace_view
from gateway import fetch as gateway_fetch
from gateway.asgi import new_request_id
from gateway.errors import ApiError
from playground import code, media, products, runs
from playground.models import Conversation, FetchRun
from playground.params import MAX_TEXT, Settings
from playground.rendering import render_markdown
from playground.views import DEFAULT_MODEL

TEMPLATE = "playground/fetch.html"
HISTORY_LENGTH = 40
CODE_NOTE = "A key limited to some products needs fetch among them."
# Refusals that are about the URL itself, shown beside the field rather than above the form.
_URL_CODES = {
    "invalid_url", "scheme_not_allowed", "credentials_in_url", "port_not_allowed", "invalid_host",
    "ip_form_not_allowed", "host_not_found", "host_not_allowed", "address_not_allowed",
}  # fmt: skip
_ERROR_TITLES = {
    402: "Not enough credit",
    403: "Not allowed",
    429: "Rate limited",
    502: "The page could not be fetched",
    504: "The page took too long",
}


class FetchForm(forms.Form):
    url = forms.CharField(
        label="URL", max_length=8192,
        widget=forms.TextInput(attrs={"placeholder": "https://example.com/article", "inputmode": "url",
                                      "autocomplete": "off", "spellcheck": "false"}),
    )  # fmt: skip
    max_length = forms.IntegerField(
        label="Up to (characters)", min_value=100, max_value=MAX_TEXT, initial=20_000
    )

    def body(self) -> dict:
        data = self.cleaned_data
        return {"url": data["url"].strip(), "max_length": data["max_length"]}


class ToChatForm(forms.Form):
    url = forms.CharField(max_length=8192)
    title = forms.CharField(max_length=500, required=False)
    content = forms.CharField(max_length=MAX_TEXT, strip=False)


def _number(value: object) -> int:
    if not str(value).isdigit():
        raise Http404("No such run.")
    return int(str(value))


def _get_run_for_member(request: HttpRequest, pk: object) -> FetchRun:
    run = FetchRun.objects.for_member(request.workspace, request.user).filter(pk=_number(pk))
    found = run.first()
    if found is None:
        raise Http404("No such run.")
    return found


def _result(run: FetchRun) -> dict:
    return {
        "run": run,
        "answer": run.result,
        "rendered": render_markdown(str(run.result.get("content", ""))),
        "cost": run.cost,
        "duration_ms": run.duration_ms,
    }


def _history(request: HttpRequest, current: FetchRun | None = None) -> dict:
    runs = FetchRun.objects.for_member(request.workspace, request.user).defer("result")
    return {"history": list(runs[:HISTORY_LENGTH]), "current_id": current.pk if current else None}


def _initial(run: FetchRun | None) -> dict:
    if run is None:
        return {}
    return {"url": run.url, "max_length": run.request.get("max_length", 20_000)}


@workspace_view("playground.use")
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    current = _get_run_for_member(request, request.GET["run"]) if "run" in request.GET else None
    if current is None:
        current = FetchRun.objects.for_member(request.workspace, request.user).first()
        opened = None
        initial = {"url": request.GET.get("url", "")[:8192]}
    else:
        opened = current
        initial = _initial(opened)
    context = {
        "form": FetchForm(initial=initial),
        "tabs": products.tabs(request, "playground_fetch"),
    }
    if current is not None:
        context |= _result(current)
    return render(request, TEMPLATE, context | _history(request, opened))


def _form_response(request: HttpRequest, form: FetchForm, **errors: str) -> HttpResponse:
    status = 200 if errors.get("form_error") else 400
    response = render(request, TEMPLATE + "#form", {"form": form, **errors}, status=status)
    return reswap(retarget(response, "#fetch-form"), "outerHTML")


@workspace_view("playground.use")
@require_POST
async def run(request: HttpRequest) -> HttpResponse:
    form = FetchForm(request.POST)
    respond = sync_to_async(_form_response)
    if not form.is_valid():
        return await respond(request, form)
    body = form.body()
    request_id = new_request_id()
    started = time.monotonic()
    try:
        answer, call = await gateway_fetch.fetch(
            media.caller_of(request), body, request_id=request_id, request=request
        )
    except ApiError as exc:
        if exc.code in _URL_CODES:
            return await respond(request, form, url_error=exc.detail)
        title = _ERROR_TITLES.get(exc.status, "The page could not be read")
        return await respond(request, form, form_error=f"{title} ({exc.status}): {exc.detail}")
    saved = await FetchRun.objects.acreate(
        workspace=request.workspace,
        user=request.user,
        request=body,
        result=answer,
        request_id=request_id,
        cost=await call.charged(),
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    return await sync_to_async(_run_response)(request, saved)


def _run_response(request: HttpRequest, saved: FetchRun) -> HttpResponse:
    context = {"form": FetchForm(initial=_initial(saved))} | _result(saved)
    return render(request, TEMPLATE + "#run-and-history", context | _history(request, saved))


@workspace_view("playground.use")
@require_POST
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    saved = _get_run_for_member(request, pk)
    return runs.delete_run(
        request, saved, page="playground_fetch", template=TEMPLATE, history=_history
    )


@workspace_view("playground.use")
@require_http_methods(["GET", "POST"])
def view_code(request: HttpRequest) -> HttpResponse:
    """A run's exact request as code (`?run=`), or the request the form would send now."""
    return runs.code_view(
        request, template=TEMPLATE, form_class=FetchForm, saved=_get_run_for_member,
        snippets=code.fetch_snippets, code_note=CODE_NOTE,
    )  # fmt: skip


@workspace_view("playground.use")
@require_POST
def to_chat(request: HttpRequest) -> HttpResponse:
    """A new chat of the member's whose system prompt is the fetched page."""
    form = ToChatForm(request.POST)
    if not form.is_valid():
        return HttpResponse("The page to send is missing or too long.", status=400)
    data = form.cleaned_data
    title = data["title"].strip() or data["url"]
    system = (
        f"The user has shared a web page, fetched from {data['url']}"
        f"{f' (titled “{data["title"].strip()}”)' if data['title'].strip() else ''}. "
        "Answer from it where you can, and say when it does not say.\n\n"
        f"{data['content']}"
    )[:MAX_TEXT]
    settings = Settings(system=system, columns=[{"model": DEFAULT_MODEL}])
    conversation = Conversation.objects.create(
        workspace=request.workspace,
        user=request.user,
        title=f"Page: {title}"[:120],
        settings=settings.model_dump(),
    )
    chat = reverse("playground", kwargs={"slug": request.workspace.slug}) + f"?c={conversation.pk}"
    if request.htmx:
        return HttpResponseClientRedirect(chat)
    return redirect(chat)


urlpatterns = [
    path("", page, name="playground_fetch"),
    path("run/", run, name="playground_fetch_run"),
    path("to-chat/", to_chat, name="playground_fetch_to_chat"),
    path("code/", view_code, name="playground_fetch_code"),
    path("runs/<int:pk>/delete/", delete, name="playground_fetch_delete"),
]
