"""The Embeddings page: several inputs, a model and (if wanted) the dimensions; each vector's
length and first values, the inputs' cosine similarities as a heat map, and the vectors
as a JSON download.

The call goes through the same pipeline as `/v1/embeddings`, as the signed-in member
(metered as source "playground"); a run is kept with its exact request and its vectors
once the call succeeded. Every lookup starts from the workspace and the member.
"""

import json
import math
import time

from asgiref.sync import async_to_sync, sync_to_async
from django import forms
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget

from accounts.access import workspace_view
from gateway import embeddings as gateway_embeddings
from gateway import pipeline
from gateway.asgi import new_request_id
from gateway.catalog import available_models
from gateway.errors import ApiError
from gateway.http import validate
from playground import code, media, products, runs
from playground.models import ERROR_TITLES, EmbeddingRun
from upstream.tokens import count_tokens

TEMPLATE = "playground/embeddings.html"
HISTORY_LENGTH = 40
MAX_INPUTS = 16
SHOWN_VALUES = 6  # of each vector, on the page
DEFAULT_MODEL = "mira-embed"


class EmbeddingForm(forms.Form):
    input = forms.CharField(
        label="Inputs",
        max_length=40_000,
        error_messages={"required": "Write at least one input, one per line."},
        widget=forms.Textarea(
            attrs={"rows": 6, "placeholder": "The cat sat on the mat\nA cat was sitting on a mat"}
        ),
    )
    model = forms.CharField(max_length=128, initial=DEFAULT_MODEL)
    dimensions = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=3072,
        error_messages={
            "min_value": "Dimensions are between 1 and 3072 (or blank for the model's own).",
            "max_value": "Dimensions are between 1 and 3072 (or blank for the model's own).",
            "invalid": "Dimensions are a whole number (or blank for the model's own).",
        },
        widget=forms.NumberInput(attrs={"inputmode": "numeric", "placeholder": "model's own"}),
    )

    def clean_input(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["input"].splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            raise forms.ValidationError("Write at least one input, one per line.")
        if len(lines) > MAX_INPUTS:
            raise forms.ValidationError(f"Use at most {MAX_INPUTS} inputs (one per line).")
        return lines

    def body(self) -> dict:
        data = self.cleaned_data
        body = {"model": data["model"], "input": data["input"], "encoding_format": "float"}
        if data.get("dimensions"):
            body["dimensions"] = data["dimensions"]
        return body


def _number(value: object) -> int:
    if not str(value).isdigit():
        raise Http404("No such run.")
    return int(str(value))


def _get_run_for_member(request: HttpRequest, pk: object) -> EmbeddingRun:
    found = EmbeddingRun.objects.for_member(request.workspace, request.user).filter(pk=_number(pk))
    run = found.first()
    if run is None:
        raise Http404("No such run.")
    return run


def embedding_models() -> list[str]:
    """The fleet's embedding models (the default first if the fleet cannot be asked)."""
    try:
        models = async_to_sync(available_models)()
    except ApiError:
        return [DEFAULT_MODEL]
    ids = [str(m["id"]) for m in models if "embed" in str(m.get("id", "")).lower()]
    return ids or [DEFAULT_MODEL]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0


def similarity(vectors: list[list[float]]) -> list[list[dict]]:
    """The cosine similarity of every pair, each with its shade (0 to 10) for the heat map."""
    rows = []
    for a in vectors:
        row = []
        for b in vectors:
            value = cosine(a, b)
            row.append({"value": value, "shade": round(max(0.0, min(1.0, value)) * 10)})
        rows.append(row)
    return rows


def _result(run: EmbeddingRun) -> dict:
    inputs = run.inputs
    return {
        "run": run,
        "rows": [
            {"input": text, "length": len(vector), "head": vector[:SHOWN_VALUES]}
            for text, vector in zip(inputs, run.vectors, strict=False)
        ],
        "matrix": list(zip(inputs, similarity(run.vectors), strict=False)),
        "request_json": json.dumps(run.request, indent=2, ensure_ascii=False),
    }


def _history(request: HttpRequest, current: EmbeddingRun | None = None) -> dict:
    runs = EmbeddingRun.objects.for_member(request.workspace, request.user).defer("vectors")
    return {"history": list(runs[:HISTORY_LENGTH]), "current_id": current.pk if current else None}


def _form_context(form: EmbeddingForm, **extra) -> dict:
    models = embedding_models()
    chosen = str(form["model"].value() or DEFAULT_MODEL)
    return {"form": form, "models": models + ([chosen] if chosen not in models else [])} | extra


def _initial(run: EmbeddingRun | None) -> dict:
    if run is None:
        return {"model": DEFAULT_MODEL}
    return {
        "model": run.request.get("model", DEFAULT_MODEL),
        "input": "\n".join(run.inputs),
        "dimensions": run.request.get("dimensions"),
    }


@workspace_view("playground.use")
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    current = _get_run_for_member(request, request.GET["run"]) if "run" in request.GET else None
    if current is None:
        current = EmbeddingRun.objects.for_member(request.workspace, request.user).first()
        opened = None
    else:
        opened = current
    context = _form_context(EmbeddingForm(initial=_initial(opened)))
    context |= {"tabs": products.tabs(request, "playground_embeddings")}
    if current is not None:
        context |= {"result": _result(current)}
    return render(request, TEMPLATE, context | _history(request, opened))


def _form_response(request: HttpRequest, form: EmbeddingForm, *, error: str = "") -> HttpResponse:
    status = 200 if error else 400
    response = render(
        request, TEMPLATE + "#form", _form_context(form, form_error=error), status=status
    )
    return reswap(retarget(response, "#emb-form"), "outerHTML")


async def embed(request: HttpRequest, body: dict, request_id: str) -> tuple[dict, pipeline.Call]:
    """`/v1/embeddings` for the member: checked, held, forwarded and booked like the API's."""
    spec = validate(gateway_embeddings.EmbeddingsRequest, body)
    texts = [spec.input] if isinstance(spec.input, str) else spec.input
    call = await pipeline.start(
        media.caller_of(request), request_id=request_id, product="embeddings",
        endpoint=gateway_embeddings.PATH, model=spec.model, request=request,
        tokens_in=sum(count_tokens(t) for t in texts),
    )  # fmt: skip
    async with call:
        response = await call.forward(gateway_embeddings.PATH, body)
        call.tokens_in = response.usage().get("prompt_tokens", call.tokens_in)
    return response.json(), call


@workspace_view("playground.use")
@require_POST
async def run(request: HttpRequest) -> HttpResponse:
    form = EmbeddingForm(request.POST)
    respond = sync_to_async(_form_response)
    if not form.is_valid():
        return await respond(request, form)
    body = form.body()
    request_id = new_request_id()
    started = time.monotonic()
    try:
        answer, call = await embed(request, body, request_id)
    except ApiError as exc:
        title = ERROR_TITLES.get(exc.status, "The call failed")
        return await respond(request, form, error=f"{title} ({exc.status}): {exc.detail}")
    duration_ms = int((time.monotonic() - started) * 1000)
    cost = await call.charged()
    data = sorted(answer.get("data") or [], key=lambda item: item.get("index", 0))
    saved = await EmbeddingRun.objects.acreate(
        workspace=request.workspace,
        user=request.user,
        request=body,
        vectors=[item.get("embedding") or [] for item in data],
        tokens=call.tokens_in,
        request_id=request_id,
        cost=cost,
        duration_ms=duration_ms,
    )
    return await sync_to_async(_run_response)(request, saved)


def _run_response(request: HttpRequest, saved: EmbeddingRun) -> HttpResponse:
    context = _form_context(EmbeddingForm(initial=_initial(saved)), result=_result(saved))
    return render(request, TEMPLATE + "#run-and-history", context | _history(request, saved))


@workspace_view("playground.use")
@require_GET
def download(request: HttpRequest, pk: int) -> HttpResponse:
    """The run's vectors as JSON: each input with its embedding, and the model that made them."""
    saved = _get_run_for_member(request, pk)
    data = {
        "model": saved.request.get("model", ""),
        "dimensions": len(saved.vectors[0]) if saved.vectors else 0,
        "data": [
            {"index": index, "input": text, "embedding": vector}
            for index, (text, vector) in enumerate(zip(saved.inputs, saved.vectors, strict=False))
        ],
    }
    response = JsonResponse(data, json_dumps_params={"ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="embeddings-{saved.pk}.json"'
    return response


@workspace_view("playground.use")
@require_POST
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    saved = _get_run_for_member(request, pk)
    return runs.delete_run(
        request, saved, page="playground_embeddings", template=TEMPLATE, history=_history
    )


@workspace_view("playground.use")
@require_http_methods(["GET", "POST"])
def view_code(request: HttpRequest) -> HttpResponse:
    """A run's exact request as code (`?run=`), or the request the form would send now."""
    return runs.code_view(
        request, template=TEMPLATE, form_class=EmbeddingForm, saved=_get_run_for_member,
        snippets=code.embedding_snippets,
    )  # fmt: skip


urlpatterns = [
    path("", page, name="playground_embeddings"),
    path("run/", run, name="playground_embeddings_run"),
    path("code/", view_code, name="playground_embeddings_code"),
    path("runs/<int:pk>/vectors.json", download, name="playground_embeddings_download"),
    path("runs/<int:pk>/delete/", delete, name="playground_embeddings_delete"),
]
