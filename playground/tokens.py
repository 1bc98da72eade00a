"""The live token count of the playground's prompts: "N tokens · ≈ $X" before anything is sent.

The tokens are counted here, in the console, as the gateway counts a prompt before it
holds its cost (`upstream.tokens`): no upstream call, nothing metered. The estimate is
the price in force of that many input tokens of the model. A chat's count is the whole
conversation the next send would carry, system prompt included (the same body as its
"View code"); the Responses and Embeddings pages count their form's fields.
"""

import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST
from pydantic import ValidationError

from accounts.access import workspace_view
from console.models import Product, Unit
from console.pricing import unit_cost
from gateway import chat
from gateway import responses as gateway_responses
from playground import conversations, views
from playground.conversations import Tree
from playground.params import MAX_IMAGES, Invalid, parse_settings, parse_text
from upstream.tokens import count_tokens

TEMPLATE = "playground/token_count.html"
MAX_CHARACTERS = 1_000_000  # of a prompt counted at once


def _chat(request: HttpRequest) -> tuple[str, str, int]:
    """The conversation the next send of the column would carry: the system prompt, the
    column's thread so far and the draft with its attached images."""
    try:
        state = json.loads(request.POST.get("state", ""))
        if not isinstance(state, dict):
            raise ValueError
    except ValueError:
        raise Invalid("Send the conversation's state to count.") from None
    settings = parse_settings(state.get("settings"))
    index = state.get("column", settings.active)
    if not isinstance(index, int) or not 0 <= index < len(settings.columns):
        raise Invalid("No such column.")
    column = settings.columns[index]
    draft = parse_text(state.get("draft"))
    path: list = []
    if state.get("conversation") is not None:
        conversation = views._get_conversation_for_member(request, state["conversation"])
        tree = Tree(list(conversation.messages.all()))
        path = tree.path(tree.get(column.leaf))
    images = state.get("images", 0)
    if not isinstance(images, int) or not 0 <= images <= MAX_IMAGES:
        raise Invalid(f"Attach at most {MAX_IMAGES} images to one message.")
    messages = conversations.messages_for_request(path, settings.system)
    if draft.strip() or images:
        # Each attached image counts as the gateway counts one, whatever its size.
        parts = [{"type": "image_url", "image_url": {"url": ""}}] * images
        messages.append({"role": "user", "content": [{"type": "text", "text": draft}, *parts]})
    tokens = chat.prompt_tokens(messages) if messages else 0
    return Product.CHAT, column.model, tokens


def _responses(request: HttpRequest) -> tuple[str, str, int]:
    body = {"model": _model(request), "input": request.POST.get("input", "")}
    if request.POST.get("instructions", "").strip():
        body["instructions"] = request.POST["instructions"]
    try:
        tools = json.loads(request.POST.get("tools") or "null")
    except ValueError:
        tools = None  # the form says what is wrong with them when it is sent
    if isinstance(tools, list) and all(isinstance(tool, dict) for tool in tools):
        body["tools"] = tools
    try:
        spec = gateway_responses.ResponsesRequest.model_validate(body)
    except ValidationError:
        raise Invalid("The prompt cannot be counted.") from None
    return Product.RESPONSES, spec.model, gateway_responses.prompt_tokens(spec)


def _embeddings(request: HttpRequest) -> tuple[str, str, int]:
    inputs = [line for line in request.POST.get("input", "").splitlines() if line.strip()]
    return Product.EMBEDDINGS, _model(request), sum(count_tokens(text) for text in inputs)


def _model(request: HttpRequest) -> str:
    model = request.POST.get("model", "").strip()
    if not model or len(model) > 128:
        raise Invalid("Pick a model to count for.")
    return model


COUNTERS = {"chat": _chat, "responses": _responses, "embeddings": _embeddings}


@workspace_view("playground.use")
@require_POST
def token_count(request: HttpRequest) -> HttpResponse:
    """The count and its price, as the fragment the page shows beside the prompt; 400 with
    what is wrong (shown in the same place) for what cannot be counted."""
    counter = COUNTERS.get(request.POST.get("kind", ""))
    try:
        if counter is None:
            raise Invalid("Say what to count: kind is chat, responses or embeddings.")
        if sum(len(v) for v in request.POST.values()) > MAX_CHARACTERS:
            raise Invalid("The prompt is too long to count here.")
        product, model, tokens = counter(request)
    except Invalid as exc:
        return render(request, TEMPLATE, {"error": str(exc)}, status=400)
    unit = Unit.EMBEDDING_TOKEN if product == Product.EMBEDDINGS else Unit.INPUT_TOKEN
    cost = unit_cost(product, model, unit, tokens)
    context = {"tokens": tokens, "cost": cost, "model": model}
    return render(request, TEMPLATE, context)
