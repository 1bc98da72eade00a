"""The Responses page: a prompt, instructions, a model and (if wanted) function tools, sent to
`/v1/responses`; the answer's output (text, and any tool calls) beside the exact request
body and the response object received, with what it cost.

The call goes through the same pipeline as `/v1/responses`, as the signed-in member
(metered as source "playground"). A run is kept with its request and response once the
call succeeded. Every lookup starts from the workspace and the member.
"""

import json
import time

from asgiref.sync import sync_to_async
from django import forms
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget

from accounts.access import workspace_view
from gateway import pipeline
from gateway import responses as gateway_responses
from gateway.asgi import new_request_id
from gateway.catalog import held_output, output_limit
from gateway.errors import ApiError
from gateway.http import MAX_OUTPUT_TOKENS, validate
from playground import code, media, products, runs, views
from playground.models import ERROR_TITLES, ResponseRun

TEMPLATE = "playground/responses.html"
HISTORY_LENGTH = 40
DEFAULT_MODEL = "mira"


class ResponseForm(forms.Form):
    input = forms.CharField(
        label="Prompt",
        max_length=100_000,
        strip=True,
        error_messages={"required": "Write a prompt to send."},
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "Explain recursion in one line."}),
    )
    instructions = forms.CharField(
        required=False,
        max_length=20_000,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "You are a concise teacher."}),
    )
    model = forms.CharField(max_length=128, initial=DEFAULT_MODEL)
    max_output_tokens = forms.IntegerField(
        label="Max output tokens",
        required=False,
        min_value=1,
        max_value=MAX_OUTPUT_TOKENS,
        error_messages={
            "min_value": f"Between 1 and {MAX_OUTPUT_TOKENS:,} (or blank for the default).",
            "max_value": f"Between 1 and {MAX_OUTPUT_TOKENS:,} (or blank for the default).",
            "invalid": "A whole number (or blank for the default).",
        },
        widget=forms.NumberInput(attrs={"inputmode": "numeric", "placeholder": "default"}),
    )
    stream = forms.BooleanField(
        required=False, initial=True, label="Stream", help_text="events as they come"
    )
    tools = forms.CharField(
        label="Function tools",
        required=False,
        max_length=50_000,
        widget=forms.Textarea(
            attrs={
                "rows": 4,
                "spellcheck": "false",
                "placeholder": '[{"type": "function", "name": "get_weather", "parameters": '
                '{"type": "object", "properties": {"city": {"type": "string"}}}}]',
            }
        ),
    )

    def clean_tools(self) -> list[dict] | None:
        text = self.cleaned_data["tools"].strip()
        if not text:
            return None
        try:
            tools = json.loads(text)
        except ValueError:
            raise forms.ValidationError(
                "The tools are not JSON: write an array of tools."
            ) from None
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise forms.ValidationError("The tools are a JSON array of objects.")
        for index, tool in enumerate(tools):
            if tool.get("type") != "function" or not tool.get("name"):
                raise forms.ValidationError(
                    f"Tool {index + 1} is not a function tool with a name "
                    '({"type": "function", "name": ...}).'
                )
        return tools

    def body(self) -> dict:
        data = self.cleaned_data
        body = {"model": data["model"], "input": data["input"]}
        if data["instructions"]:
            body["instructions"] = data["instructions"]
        if data.get("max_output_tokens"):
            body["max_output_tokens"] = data["max_output_tokens"]
        if data.get("tools"):
            body["tools"] = data["tools"]
        return body


def _number(value: object) -> int:
    if not str(value).isdigit():
        raise Http404("No such run.")
    return int(str(value))


def _get_run_for_member(request: HttpRequest, pk: object) -> ResponseRun:
    found = ResponseRun.objects.for_member(request.workspace, request.user).filter(pk=_number(pk))
    run = found.first()
    if run is None:
        raise Http404("No such run.")
    return run


def output_of(response: dict) -> list[dict]:
    """The response's output as the page shows it: text, tool calls and reasoning summaries."""
    shown = []
    for item in response.get("output") or ():
        kind = item.get("type")
        if kind == "message":
            text = "".join(
                part.get("text", "")
                for part in item.get("content") or ()
                if part.get("type") == "output_text"
            )
            shown.append({"kind": "text", "text": text})
        elif kind in ("function_call", "custom_tool_call"):
            arguments = item.get("arguments", item.get("input", ""))
            try:
                arguments = json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
            except (TypeError, ValueError):
                pass
            shown.append(
                {
                    "kind": "tool",
                    "name": item.get("name", ""),
                    "call_id": item.get("call_id", ""),
                    "arguments": arguments,
                }
            )
        elif kind == "reasoning":
            summary = " ".join(s.get("text", "") for s in item.get("summary") or ())
            if summary:
                shown.append({"kind": "reasoning", "text": summary})
    return shown


def result_context(run: ResponseRun) -> dict:
    return {
        "run": run,
        "output": output_of(run.response),
        "request_json": json.dumps(run.request, indent=2, ensure_ascii=False),
        "response_json": json.dumps(run.response, indent=2, ensure_ascii=False),
        "events_json": "\n".join(json.dumps(e, ensure_ascii=False) for e in run.events),
    }


def _history(request: HttpRequest, current: ResponseRun | None = None) -> dict:
    runs = ResponseRun.objects.for_member(request.workspace, request.user)[:HISTORY_LENGTH]
    return {"history": list(runs), "current_id": current.pk if current else None}


def _model_ids(*extra: str) -> tuple[list[str], str]:
    models, error = views._chat_models()
    ids = [m["id"] for m in models]
    ids += [m for m in extra if m and m not in ids]
    return ids or [DEFAULT_MODEL], error


def _form_context(form: ResponseForm, **extra) -> dict:
    chosen = str(form["model"].value() or DEFAULT_MODEL)
    model_ids, models_error = _model_ids(chosen)
    return {"form": form, "model_ids": model_ids, "models_error": models_error} | extra


def _initial(run: ResponseRun | None) -> dict:
    if run is None:
        return {"model": DEFAULT_MODEL}
    request = run.request
    initial = {name: request.get(name) for name in ("model", "input", "instructions")}
    initial["stream"] = bool(request.get("stream"))
    initial["max_output_tokens"] = request.get("max_output_tokens")
    if request.get("tools"):
        initial["tools"] = json.dumps(request["tools"], indent=2)
    return initial


@workspace_view("playground.use")
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    current = _get_run_for_member(request, request.GET["run"]) if "run" in request.GET else None
    context = _form_context(ResponseForm(initial=_initial(current)))
    context |= {"tabs": products.tabs(request, "playground_responses")}
    if current is not None:
        context |= {"result": result_context(current)}
    return render(request, TEMPLATE, context | _history(request, current))


def _form_response(request: HttpRequest, form: ResponseForm, *, error: str = "") -> HttpResponse:
    status = 200 if error else 400
    response = render(
        request, TEMPLATE + "#form", _form_context(form, form_error=error), status=status
    )
    return reswap(retarget(response, "#rsp-form"), "outerHTML")


async def respond(request: HttpRequest, body: dict, request_id: str) -> tuple[dict, pipeline.Call]:
    """`/v1/responses` for the member: checked, held, forwarded and booked like the API's.
    `body` gains the output limit the call was held for, as it was sent upstream."""
    spec = validate(gateway_responses.ResponsesRequest, body)
    gateway_responses.check_tools(spec)
    body["max_output_tokens"] = limit = await output_limit(spec.model, spec.max_output_tokens)
    call = await pipeline.start(
        media.caller_of(request), request_id=request_id, product="responses",
        endpoint=gateway_responses.PATH, model=spec.model, request=request,
        tokens_in=gateway_responses.prompt_tokens(spec),
        max_tokens=held_output(spec.model, limit),
    )  # fmt: skip
    async with call:
        response = await call.forward(gateway_responses.PATH, body)
        gateway_responses.count_usage(call, response.usage())
    return response.json(), call


@workspace_view("playground.use")
@require_POST
async def send(request: HttpRequest) -> HttpResponse:
    form = ResponseForm(request.POST)
    form_response = sync_to_async(_form_response)
    if not form.is_valid():
        return await form_response(request, form)
    asked = form.body()
    body = dict(asked)
    request_id = new_request_id()
    started = time.monotonic()
    try:
        answer, call = await respond(request, body, request_id)
    except ApiError as exc:
        title = ERROR_TITLES.get(exc.status, "The call failed")
        return await form_response(request, form, error=f"{title} ({exc.status}): {exc.detail}")
    duration_ms = int((time.monotonic() - started) * 1000)
    cost = await call.charged()
    saved = await ResponseRun.objects.acreate(
        workspace=request.workspace,
        user=request.user,
        request=body,
        response=answer,
        request_id=request_id,
        tokens_in=call.tokens_in,
        tokens_out=call.tokens_out,
        cost=cost,
        duration_ms=duration_ms,
    )
    return await sync_to_async(_run_response)(request, saved, asked)


def _run_response(request: HttpRequest, saved: ResponseRun, asked: dict) -> HttpResponse:
    # The form again as the member filled it in (the output limit only if they set one).
    initial = _initial(saved) | {"max_output_tokens": asked.get("max_output_tokens")}
    context = _form_context(ResponseForm(initial=initial), result=result_context(saved))
    return render(request, TEMPLATE + "#run-and-history", context | _history(request, saved))


@workspace_view("playground.use")
@require_POST
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    saved = _get_run_for_member(request, pk)
    return runs.delete_run(
        request, saved, page="playground_responses", template=TEMPLATE, history=_history
    )


@workspace_view("playground.use")
@require_http_methods(["GET", "POST"])
def view_code(request: HttpRequest) -> HttpResponse:
    """A run's exact request as code (`?run=`), or the request the form would send now."""
    return runs.code_view(
        request, template=TEMPLATE, form_class=ResponseForm, saved=_get_run_for_member,
        snippets=code.response_snippets,
    )  # fmt: skip


urlpatterns = [
    path("", page, name="playground_responses"),
    path("send/", send, name="playground_responses_send"),
    path("code/", view_code, name="playground_responses_code"),
    path("runs/<int:pk>/delete/", delete, name="playground_responses_delete"),
]
