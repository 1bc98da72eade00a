"""The chat playground page, its history and presets, its images and its "View code".

The conversation itself streams over the websocket (`playground.consumers`); these
views render the page, and the pieces of it that htmx swaps (`#history`, `#presets`,
`#code`). Every lookup starts from the member: their workspace and, for
conversations, themselves.
"""

import json
import logging

from asgiref.sync import async_to_sync
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from accounts.access import workspace_view
from gateway.catalog import available_models
from gateway.errors import ApiError
from playground import code, conversations, products
from playground.conversations import Tree
from playground.forms import PresetForm
from playground.models import Conversation, Message, Preset, Role
from playground.params import Invalid, Settings, image_bytes, parse_settings, parse_text

logger = logging.getLogger(__name__)

TEMPLATE = "playground/playground.html"
HISTORY_LENGTH = 50
DEFAULT_MODEL = "mira"


def _number(value: object, what: str) -> int:
    if not str(value).isdigit():
        raise Http404(f"No such {what}.")
    return int(str(value))


def _get_conversation_for_member(request: HttpRequest, pk: object) -> Conversation:
    mine = Conversation.objects.for_member(request.workspace, request.user)
    conversation = mine.filter(pk=_number(pk, "conversation")).first()
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _get_preset_for_member(request: HttpRequest, pk: object, *, to_change: bool) -> Preset:
    """A preset the member can see (theirs or shared); to change it, it must be theirs."""
    presets = Preset.objects.visible_to(request.workspace, request.user)
    preset = presets.filter(pk=_number(pk, "preset")).first()
    if preset is None:
        raise Http404("No such preset.")
    if to_change and preset.owner_id != request.user.pk:
        raise PermissionDenied("Only the member who saved a preset may change or delete it.")
    return preset


def _chat_models() -> tuple[list[dict], str]:
    """The fleet's chat models (not embedding models), or an explanation why there are none."""
    try:
        models = async_to_sync(available_models)()
    except ApiError as exc:
        logger.warning("could not list the fleet's models: %s", exc)
        return [], "The model list could not be loaded from the upstream; type a model name."
    chat = [
        m
        for m in models
        if m.get("max_output_tokens") != 0 and "embed" not in str(m.get("id", "")).lower()
    ]
    return chat, ""


def _default_settings(models: list[dict]) -> Settings:
    ids = [m["id"] for m in models]
    model = DEFAULT_MODEL if DEFAULT_MODEL in ids or not ids else ids[0]
    return Settings(columns=[{"model": model}])


def _settings_of(conversation: Conversation | None, models: list[dict]) -> Settings:
    if conversation is not None:
        try:
            return parse_settings(conversation.settings)
        except Invalid:
            logger.warning("conversation %s has unreadable settings", conversation.pk)
    return _default_settings(models)


def _history(request: HttpRequest, current: Conversation | None) -> dict:
    history = Conversation.objects.for_member(request.workspace, request.user)[:HISTORY_LENGTH]
    return {"history": history, "current_id": current.pk if current else None}


def _presets(request: HttpRequest, **extra) -> dict:
    presets = list(
        Preset.objects.visible_to(request.workspace, request.user).select_related("owner")
    )
    mine = [p for p in presets if p.owner_id == request.user.pk]
    shared = [p for p in presets if p.owner_id != request.user.pk]
    data = [
        {
            "id": p.pk,
            "name": p.name,
            "settings": p.settings,
            "mine": p.owner_id == request.user.pk,
            "shared": p.shared,
        }
        for p in presets
    ]
    context = {"my_presets": mine, "shared_presets": shared, "preset_data": data}
    return context | {"preset_form": PresetForm()} | extra


@workspace_view("playground.use")
@require_GET
def playground(request: HttpRequest) -> HttpResponse:
    conversation = None
    if request.GET.get("c"):
        conversation = _get_conversation_for_member(request, request.GET["c"])
    if request.htmx and request.htmx.target == "pg-history":
        return render(request, TEMPLATE + "#history", _history(request, conversation))
    if request.htmx and request.htmx.target == "pg-presets":
        return render(request, TEMPLATE + "#presets", _presets(request))
    models, models_error = _chat_models()
    settings = _settings_of(conversation, models)
    tree = Tree(list(conversation.messages.all()) if conversation else [])
    columns = []
    for index, column in enumerate(settings.columns):
        leaf = tree.get(column.leaf)
        if leaf is None:
            column.leaf = None
        columns.append(
            {
                "index": index,
                "label": "ABC"[index],
                "model": column.model,
                "turns": tree.turns(leaf, index),
            }
        )
    model_ids = [m["id"] for m in models]
    for column in settings.columns:
        if column.model not in model_ids:
            model_ids.append(column.model)
    context = {
        "conversation": conversation,
        "settings": settings.model_dump(),
        "columns": columns,
        "models": models,
        "model_ids": model_ids,
        "models_error": models_error,
        "totals": conversations.totals(conversation),
        "can_manage_billing": request.membership.can("billing.manage"),
        "tabs": products.tabs(request, "playground"),
    }
    context |= _history(request, conversation) | _presets(request)
    return render(request, TEMPLATE, context)


@workspace_view("playground.use")
@require_POST
def conversation_delete(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = _get_conversation_for_member(request, pk)
    was_open = request.POST.get("open") == str(conversation.pk)
    conversation.delete()
    page = reverse("playground", kwargs={"slug": request.workspace.slug})
    if not request.htmx:
        return redirect(page)
    if was_open:
        return HttpResponseClientRedirect(page)
    return render(request, TEMPLATE + "#history", _history(request, None))


@workspace_view("playground.use")
@require_GET
def image(request: HttpRequest, pk: int, index: int) -> HttpResponse:
    message = (
        Message.objects.filter(
            pk=pk,
            conversation__workspace=request.workspace,
            conversation__user=request.user,
            role=Role.USER,
        )
        .only("images")
        .first()
    )
    if message is None or not 0 <= index < len(message.images):
        raise Http404("No such image.")
    media_type, data = image_bytes(message.images[index])
    response = HttpResponse(data, content_type=media_type)
    response["Cache-Control"] = "private, max-age=86400, immutable"
    return response


@workspace_view("playground.use")
@require_POST
def preset_save(request: HttpRequest) -> HttpResponse:
    form = PresetForm(request.POST)
    if not form.is_valid():
        return render(request, TEMPLATE + "#presets", _presets(request, preset_form=form))
    name = form.cleaned_data["name"]
    with transaction.atomic():
        preset, created = Preset.objects.select_for_update().get_or_create(
            workspace=request.workspace,
            owner=request.user,
            name=name,
            defaults={"settings": form.cleaned_data["settings"]},
        )
        preset.settings = form.cleaned_data["settings"]
        preset.shared = form.cleaned_data["shared"]
        preset.save()
    note = f"Saved “{name}”." if created else f"Updated “{name}”."
    return render(
        request, TEMPLATE + "#presets", _presets(request, preset_note=note, selected_id=preset.pk)
    )


@workspace_view("playground.use")
@require_POST
def preset_delete(request: HttpRequest) -> HttpResponse:
    preset = _get_preset_for_member(request, request.POST.get("preset"), to_change=True)
    name = preset.name
    preset.delete()
    return render(
        request, TEMPLATE + "#presets", _presets(request, preset_note=f"Deleted “{name}”.")
    )


@workspace_view("playground.use")
@require_POST
def view_code(request: HttpRequest) -> HttpResponse:
    """The request the page stands for, as code: the next one (with the draft), or the last."""
    try:
        state = json.loads(request.POST.get("state", ""))
        if not isinstance(state, dict):
            raise ValueError
    except ValueError:
        return render(request, TEMPLATE + "#code", {"code_error": "The page sent no request."})
    try:
        body = _request_body(request, state)
    except Invalid as exc:
        return render(request, TEMPLATE + "#code", {"code_error": str(exc)})
    shown, shortened = code.shorten_images(body)
    base_url = request.build_absolute_uri("/v1").rstrip("/")
    context = {"snippets": code.snippets(shown, base_url), "shortened": shortened}
    return render(request, TEMPLATE + "#code", context)


def _request_body(request: HttpRequest, state: dict) -> dict:
    settings = parse_settings(state.get("settings"))
    index = state.get("column", settings.active)
    if not isinstance(index, int) or not 0 <= index < len(settings.columns):
        raise Invalid("No such column.")
    column = settings.columns[index]
    draft = parse_text(state.get("draft"))
    path: list[Message] = []
    if state.get("conversation") is not None:
        conversation = _get_conversation_for_member(request, state["conversation"])
        tree = Tree(list(conversation.messages.all()))
        leaf = tree.get(column.leaf)
        path = tree.path(leaf)
        if not draft.strip() and leaf is not None and leaf.role == Role.ASSISTANT and leaf.params:
            # No draft: the exact request that produced the last reply.
            params = dict(leaf.params)
            system = params.pop("system", "")
            messages = conversations.messages_for_request(path[:-1], system)
            return params | {"messages": messages}
    messages = conversations.messages_for_request(path, settings.system)
    if draft.strip() or not path:
        messages.append({"role": "user", "content": draft.strip() or "Hello!"})
    return settings.request_params(column) | {"messages": messages}
