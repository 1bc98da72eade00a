"""The Fetch page: a URL in, the page's main content out as rendered Markdown and as the raw
Markdown, with its length, how long it took and what it cost; "Send to chat" opens a chat
whose system prompt holds the page.

The call is `gateway.fetch.fetch` as the signed-in member, the same pipeline (and the same
guard against fetching anything inward) as `/v1/fetch`. Conversations are the member's own.
"""

import time

from asgiref.sync import sync_to_async
from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from accounts.access import workspace_view
from gateway import fetch as gateway_fetch
from gateway.asgi import new_request_id
from gateway.errors import ApiError
from playground import media, products
from playground.models import Conversation
from playground.params import MAX_TEXT, Settings
from playground.rendering import render_markdown
from playground.views import DEFAULT_MODEL

TEMPLATE = "playground/fetch.html"
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


class ToChatForm(forms.Form):
    url = forms.CharField(max_length=8192)
    title = forms.CharField(max_length=500, required=False)
    content = forms.CharField(max_length=MAX_TEXT, strip=False)


@workspace_view("playground.use")
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    form = FetchForm(initial={"url": request.GET.get("url", "")[:8192]})
    tabs = products.tabs(request, "playground_fetch")
    return render(request, TEMPLATE, {"form": form, "tabs": tabs})


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
    body = {"url": form.cleaned_data["url"].strip(), "max_length": form.cleaned_data["max_length"]}
    started = time.monotonic()
    try:
        answer, call = await gateway_fetch.fetch(
            media.caller_of(request), body, request_id=new_request_id(), request=request
        )
    except ApiError as exc:
        if exc.code in _URL_CODES:
            return await respond(request, form, url_error=exc.detail)
        title = _ERROR_TITLES.get(exc.status, "The page could not be read")
        return await respond(request, form, form_error=f"{title} ({exc.status}): {exc.detail}")
    duration_ms = int((time.monotonic() - started) * 1000)
    context = {
        "answer": answer,
        "rendered": render_markdown(answer["content"]),
        "cost": await call.charged(),
        "duration_ms": duration_ms,
        "form": FetchForm(initial=form.cleaned_data),
        "oob": True,
    }
    return await sync_to_async(render)(request, TEMPLATE + "#result-and-form", context)


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
]
