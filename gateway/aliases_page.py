"""The Model aliases section of the Settings page: the names clients ask for, and the
fleet's model that serves each (console.aliases). Owners and admins only, as Settings."""

import logging

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import messages
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.access import workspace_view
from console import aliases
from console.models import AuditEvent, ModelAlias
from gateway.catalog import available_models, fleet_aliases
from gateway.errors import ApiError

logger = logging.getLogger(__name__)

TEMPLATE = "gateway/aliases.html"
RECENT_CHANGES = 5


class AliasForm(forms.Form):
    pattern = forms.CharField(
        label="Model name asked for",
        max_length=aliases.MAX_LENGTH,
        strip=True,
        widget=forms.TextInput(
            attrs={
                "placeholder": "e.g. claude-* or gpt-5.1-codex",
                "autocomplete": "off",
                "spellcheck": "false",
            }
        ),  # fmt: skip
        error_messages={
            "required": "Enter the model name clients ask for.",
            "max_length": "At most %(limit_value)d characters.",
        },
    )
    target = forms.ChoiceField(
        label="Served by",
        error_messages={
            "required": "Choose the model that serves it.",
            "invalid_choice": "“%(value)s” is not a model the fleet serves.",
        },
    )

    def __init__(self, *args, workspace, models: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        self.models = models
        self.fields["target"].choices = [("", "Choose a model…")] + [(m, m) for m in models]

    def clean_pattern(self) -> str:
        pattern = self.cleaned_data["pattern"]
        problem = aliases.problem_with_pattern(pattern)
        if problem:
            raise forms.ValidationError(problem)
        if pattern in self.models:
            raise forms.ValidationError(
                f"{pattern} is a model of the fleet: calls that name it are never aliased."
            )
        if ModelAlias.objects.for_workspace(self.workspace).filter(pattern=pattern).exists():
            raise forms.ValidationError(f"There is an alias for {pattern} already.")
        return pattern


def fleet_model_ids() -> tuple[list[str], str]:
    """The ids of the fleet's models, or why they could not be read."""
    try:
        models = async_to_sync(available_models)()
    except ApiError as exc:
        logger.warning("could not list the fleet's models: %s", exc)
        return [], "The fleet's model list could not be read, so no alias can be added now."
    return [m["id"] for m in models], ""


def _context(request: HttpRequest, form: AliasForm | None = None, **extra) -> dict:
    models, unavailable = fleet_model_ids()
    form = form or AliasForm(workspace=request.workspace, models=models)
    shared = fleet_aliases()
    return {
        "aliases": ModelAlias.objects.for_workspace(request.workspace),
        "fleet_aliases": sorted(
            [*shared.exact.items(), *((p, t) for p, _regex, t in shared.globs)]
        ),
        "form": form,
        "unavailable": unavailable,
        "changes": AuditEvent.objects.filter(
            workspace=request.workspace, action__startswith="alias."
        ).select_related("actor")[:RECENT_CHANGES],
    } | extra


def _section(request: HttpRequest, context: dict, *, status: int = 200) -> HttpResponse:
    return render(request, f"{TEMPLATE}#aliases", context, status=status)


@workspace_view("settings.manage")
def alias_list(request: HttpRequest) -> HttpResponse:
    if request.htmx:
        return _section(request, _context(request))
    return render(request, TEMPLATE, _context(request))


@workspace_view("settings.manage")
@require_POST
def alias_add(request: HttpRequest) -> HttpResponse:
    models, _unavailable = fleet_model_ids()
    form = AliasForm(request.POST, workspace=request.workspace, models=models)
    notice = ""
    if form.is_valid():
        pattern, target = form.cleaned_data["pattern"], form.cleaned_data["target"]
        try:
            aliases.add_alias(
                workspace=request.workspace, pattern=pattern, target=target, by=request.user
            )
        except IntegrityError:  # added by someone else a moment ago
            form.add_error("pattern", f"There is an alias for {pattern} already.")
        else:
            notice = f"Calls asking for {pattern} are now served by {target}."
            form = None
    if not request.htmx:
        if notice:
            messages.success(request, notice)
            return redirect("settings", slug=request.workspace.slug)
        return render(request, TEMPLATE, _context(request, form), status=400)
    return _section(request, _context(request, form, notice=notice), status=400 if form else 200)


@workspace_view("settings.manage")
@require_POST
def alias_delete(request: HttpRequest, pk: int) -> HttpResponse:
    alias = _get_alias_for_member(request, pk)
    aliases.delete_alias(alias=alias, by=request.user)
    notice = f"The alias {alias.pattern} → {alias.target} is deleted."
    if not request.htmx:
        messages.success(request, notice)
        return redirect("settings", slug=request.workspace.slug)
    return _section(request, _context(request, notice=notice))


def _get_alias_for_member(request: HttpRequest, pk: int) -> ModelAlias:
    alias = ModelAlias.objects.for_workspace(request.workspace).filter(pk=pk).first()
    if alias is None:
        raise Http404("No such alias.")
    return alias
