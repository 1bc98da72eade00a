"""The Voice page: text to speech (in one voice, or two compared side by side) and speech to
text (an uploaded file, or a recording from the microphone).

Speech takes two requests, so that the player starts with the first bytes: the form (a
CSRF-checked POST) is checked and answered with players whose source is a *ticket*: a
request id signed for the member and the workspace, its exact body waiting in the shared
cache for a quarter of an hour. The player's GET of its ticket calls
`gateway.audio.speak_streamed` as the member and relays the audio as the upstream sends
it; once complete (and kept as the workspace's file) the run is written, and the player's
status, polled, shows its cost and time. A ticket is spoken once: asked again
(a browser reading its source anew), it answers with the kept file.

Transcription calls `gateway.audio.transcribe` as the member. A call the gateway refuses
is shown beside its field and nothing is written. Every lookup starts from the workspace
and the member: another member's runs are 404.
"""

import time
from collections.abc import AsyncIterator
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.core import signing
from django.core.cache import cache
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from accounts.access import workspace_view
from gateway import audio
from gateway.asgi import new_request_id
from gateway.errors import ApiError
from playground import code, media, products, runs
from playground.forms import SpeechForm, TranscriptionForm
from playground.models import ERROR_TITLES, VoiceRun

TEMPLATE = "playground/voice.html"
HISTORY_LENGTH = 40
RECENT_CARDS = 3
TICKET_SECONDS = 15 * 60
TICKET_SALT = "playground.voice.ticket"
PREVIEW_TEXT = "Hello, I am {name}. This is how I sound."
PREVIEW_SECONDS = 24 * 60 * 60
NO_AUDIO = "Choose an audio file, or record one with the microphone."
AUDIO_ACCEPT = "audio/*,.wav,.mp3,.ogg,.oga,.flac,.webm,.m4a"


# --- lookups ---------------------------------------------------------------------------


def _number(value: object) -> int:
    if not str(value).isdigit():
        raise Http404("No such run.")
    return int(str(value))


def _runs(request: HttpRequest):
    return VoiceRun.objects.for_member(request.workspace, request.user)


def _get_run_for_member(request: HttpRequest, pk: object) -> VoiceRun:
    found = _runs(request).filter(pk=_number(pk)).first()
    if found is None:
        raise Http404("No such run.")
    return found


def _with_group(request: HttpRequest, run: VoiceRun) -> list[VoiceRun]:
    """The run, and the other speech of its comparison, in the order they were asked for."""
    if not run.group:
        return [run]
    runs = list(_runs(request).filter(group=run.group))
    return sorted(runs, key=lambda r: (r.result.get("slot", 0), r.pk))


# --- voices ----------------------------------------------------------------------------


async def _voices(request: HttpRequest) -> tuple[list[dict], str]:
    """The voices the gateway lists, or why there are none."""
    try:
        answer = await audio.voices(media.caller_of(request))
    except ApiError as exc:
        return [], "The voices could not be listed: " + _explain(exc)
    voices = [v for v in answer["data"] if isinstance(v, dict) and isinstance(v.get("id"), str)]
    return voices, ""


def _label(voice: dict) -> str:
    name = str(voice.get("name") or voice["id"])
    languages = voice.get("language") or []
    if isinstance(languages, list) and languages:
        return f"{name} ({', '.join(str(code) for code in languages)})"
    return name


def _choices(voices: list[dict]) -> list[tuple[str, str]]:
    return [(v["id"], _label(v)) for v in voices]


def _names(voices: list[dict]) -> dict[str, str]:
    return {v["id"]: str(v.get("name") or v["id"]) for v in voices}


# --- tickets ---------------------------------------------------------------------------


def _salt(request: HttpRequest) -> str:
    return f"{TICKET_SALT}:{request.workspace.pk}:{request.user.pk}"


async def _ticket(
    request: HttpRequest, body: dict, *, request_id: str, group: str, slot: int
) -> str:
    """A player's source: the body waits in the (shared) cache, so that the link stays short
    whatever the text."""
    await cache.aset(_body_key(request_id), body, TICKET_SECONDS)
    data = {"request_id": request_id, "group": group, "slot": slot}
    return signing.dumps(data, salt=_salt(request))


def _read_ticket(request: HttpRequest, token: str) -> dict:
    """The speech a ticket stands for; 404 when it is not this member's, or too old."""
    try:
        data = signing.loads(token, salt=_salt(request), max_age=TICKET_SECONDS)
    except signing.BadSignature:
        raise Http404("No such speech, or it is too old: speak it again.") from None
    return data


def _body_key(request_id: str) -> str:
    return f"playground.voice.body:{request_id}"


def _started_key(request_id: str) -> str:
    return f"playground.voice.started:{request_id}"


def _failed_key(request_id: str) -> str:
    return f"playground.voice.failed:{request_id}"


# --- the page --------------------------------------------------------------------------


def _player(request: HttpRequest, names: dict[str, str], *, run: VoiceRun | None = None,
            body: dict | None = None, ticket: str = "", request_id: str = "", slot: int = 0,
            links: dict[str, str] | None = None) -> dict:  # fmt: skip
    """A player as the page shows it: streaming from its ticket, or playing a kept run."""
    body = run.request if run is not None else body or {}
    voice = str(body.get("voice", ""))
    player = {"voice": voice, "name": names.get(voice, voice), "body": body, "run": run}
    if run is not None:
        player["key"] = run.request_id
        player["src"] = (links or {}).get(run.file_id, "")
        player["extension"] = body.get("response_format", "mp3")
        return player
    slug = request.workspace.slug
    player["ticket"], player["key"], player["autoplay"] = ticket, request_id, slot == 0
    player["src"] = reverse("playground_voice_stream", args=[slug]) + "?ticket=" + quote(ticket)
    player["status_url"] = (
        reverse("playground_voice_status", args=[slug]) + "?ticket=" + quote(ticket)
    )
    return player


def _cards(request: HttpRequest, runs: list[VoiceRun], names: dict[str, str]) -> list[dict]:
    """Runs as the results show them: a transcription, a speech, or the two of a comparison."""
    links = media.sounds(request, [r.file_id for r in runs if r.file_id])
    cards: list[dict] = []
    by_group: dict[str, dict] = {}
    for run in runs:
        if run.kind == VoiceRun.Kind.TRANSCRIPTION:
            cards.append({"kind": "transcription", "run": run, "id": run.request_id})
            continue
        if run.group and run.group in by_group:
            by_group[run.group]["players"].append(_player(request, names, run=run, links=links))
            continue
        card = {"kind": "speech", "run": run, "id": run.request_id, "text": run.text,
                "players": [_player(request, names, run=run, links=links)]}  # fmt: skip
        cards.append(card)
        if run.group:
            by_group[run.group] = card
    for card in cards:
        if card["kind"] == "speech":
            card["players"].sort(key=lambda p: (p["run"].result.get("slot", 0), p["run"].pk))
    return cards


def _history(request: HttpRequest, current: VoiceRun | None = None) -> dict:
    """The member's runs, the two speeches of a comparison as one entry."""
    entries: list[dict] = []
    by_group: dict[str, dict] = {}
    for run in _runs(request)[:HISTORY_LENGTH]:
        spoken = [(run.result.get("slot", 0), run.request.get("voice", ""))]
        if run.group and run.group in by_group:
            entry = by_group[run.group]
            entry["voices"] = [v for _, v in sorted(entry.pop("spoken") + spoken)]
            entry["cost"] += run.cost
            continue
        voices = [spoken[0][1]] if run.kind == VoiceRun.Kind.SPEECH else []
        entry = {"run": run, "voices": voices, "cost": run.cost}
        entries.append(entry)
        if run.group:
            by_group[run.group] = entry | {"spoken": spoken}
            entries[-1] = by_group[run.group]
    current_group = (current.group or current.pk) if current is not None else None
    for entry in entries:
        entry["current"] = current_group is not None and (
            (entry["run"].group or entry["run"].pk) == current_group
        )
    return {"history": entries, "current_run": current.pk if current is not None else None}


def _speech_initial(runs: list[VoiceRun]) -> dict:
    speeches = [r for r in runs if r.kind == VoiceRun.Kind.SPEECH]
    if not speeches:
        return {"voice": audio.DEFAULT_VOICE, "speed": 1.0, "response_format": "mp3"}
    body = speeches[0].request
    initial = {name: body[name] for name in ("input", "voice", "speed", "response_format")
               if name in body}  # fmt: skip
    if len(speeches) > 1:
        initial["voice_b"] = speeches[1].request.get("voice", "")
    return initial


def _transcription_initial(runs: list[VoiceRun]) -> dict:
    heard = [r for r in runs if r.kind == VoiceRun.Kind.TRANSCRIPTION]
    return {"language": heard[0].request.get("language", "")} if heard else {}


def _form_context(voices: list[dict], voices_error: str = "") -> dict:
    return {"voices": voices, "voices_error": voices_error, "audio_accept": AUDIO_ACCEPT}


def _page_context(
    request: HttpRequest, voices: list[dict], voices_error: str, current: VoiceRun | None
) -> dict:
    names = _names(voices)
    if current is not None:
        runs = _with_group(request, current)
    else:
        runs = list(_runs(request)[: RECENT_CARDS * 2])
    cards = _cards(request, runs, names)[:RECENT_CARDS]
    context = _form_context(voices, voices_error) | {
        "speech_form": SpeechForm(initial=_speech_initial(runs if current else []),
                                  voices=_choices(voices)),
        "transcription_form": TranscriptionForm(
            initial=_transcription_initial(runs if current else [])
        ),
        "cards": cards,
        "tabs": products.tabs(request, "playground_voice"),
    }  # fmt: skip
    return context | _history(request, current)


@workspace_view("playground.use")
@require_GET
async def page(request: HttpRequest) -> HttpResponse:
    voices, voices_error = await _voices(request)
    return await sync_to_async(_page)(request, voices, voices_error)


def _page(request: HttpRequest, voices: list[dict], voices_error: str) -> HttpResponse:
    current = _get_run_for_member(request, request.GET["run"]) if "run" in request.GET else None
    return render(request, TEMPLATE, _page_context(request, voices, voices_error, current))


# --- text to speech --------------------------------------------------------------------


def _explain(exc: ApiError) -> str:
    title = ERROR_TITLES.get(exc.status, "The call failed")
    return f"{title} ({exc.status}): {exc.detail}"


def _speech_form_response(
    request: HttpRequest, form: SpeechForm, voices: list[dict], *, error: str, status: int
) -> HttpResponse:
    """The form again, with what went wrong beside it, in place of the one sent."""
    context = _form_context(voices) | {"speech_form": form, "speech_error": error}
    response = render(request, TEMPLATE + "#speech-form", context, status=status)
    return reswap(retarget(response, "#voice-speech-form"), "outerHTML")


@workspace_view("playground.use")
@require_POST
async def speak(request: HttpRequest) -> HttpResponse:
    """Check the form and answer with its players (one, or two to compare), which stream."""
    voices, voices_error = await _voices(request)
    form = SpeechForm(request.POST, voices=_choices(voices))
    respond = sync_to_async(_speech_form_response)
    if voices_error:
        return await respond(request, form, voices, error=voices_error, status=200)
    if not form.is_valid():
        return await respond(request, form, voices, error="", status=400)
    group = new_request_id() if form.comparing else ""
    names = _names(voices)
    players = []
    for slot, body in enumerate(form.bodies()):
        request_id = new_request_id()
        ticket = await _ticket(request, body, request_id=request_id, group=group, slot=slot)
        players.append(
            _player(request, names, body=body, ticket=ticket, request_id=request_id, slot=slot)
        )
    card = {"kind": "speech", "id": players[0]["key"], "text": form.cleaned_data["input"],
            "players": players}  # fmt: skip
    # The form again as it was sent, without the errors of an earlier try.
    again = SpeechForm(initial=form.cleaned_data, voices=_choices(voices))
    context = _form_context(voices) | {"card": card, "speech_form": again}
    return await sync_to_async(render)(request, TEMPLATE + "#speech-card-and-form", context)


@workspace_view("playground.use")
@require_GET
async def stream(request: HttpRequest) -> HttpResponse:
    """A ticket's speech, relayed as the upstream sends it; the kept file once it was."""
    ticket = _read_ticket(request, request.GET.get("ticket", ""))
    request_id = ticket["request_id"]
    run = await _runs(request).filter(request_id=request_id).afirst()
    if run is not None:
        links = await sync_to_async(media.sounds)(request, [run.file_id])
        if run.file_id not in links:
            raise Http404("This speech is no longer kept.")
        return HttpResponseRedirect(links[run.file_id])
    body = await cache.aget(_body_key(request_id))
    if body is None:
        raise Http404("This speech is too old: speak it again.")
    if not await cache.aadd(_started_key(request_id), True, TICKET_SECONDS):
        return HttpResponse(
            "This speech is being spoken already.", status=409, content_type="text/plain"
        )
    started = time.monotonic()
    try:
        relay = await audio.speak_streamed(
            media.caller_of(request), body, request_id=request_id, request=request
        )
    except ApiError as exc:
        await cache.aset(_failed_key(request_id), _explain(exc), TICKET_SECONDS)
        return HttpResponse(exc.detail, status=exc.status, content_type="text/plain")
    response = StreamingHttpResponse(
        _relayed(request, relay, ticket | {"body": body}, started), content_type=relay.content_type
    )
    response["Cache-Control"] = "no-store"
    response._resource_closers.append(relay.close_soon)
    return response


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


async def _relayed(
    request: HttpRequest, relay: audio.SpeechRelay, ticket: dict, started: float
) -> AsyncIterator[bytes]:
    """The relay's pieces; the run is written once the audio is complete and kept."""
    first_byte_ms = None
    failure = "The player left before the end: the speech was charged but not kept."
    try:
        async for piece in relay.pieces():
            if first_byte_ms is None:
                first_byte_ms = _ms(started)
            yield piece
        failure = ""
    except Exception:
        failure = "The upstream failed while speaking: nothing was kept. Speak it again."
        raise
    finally:
        if failure:
            # Said by the player's status, which would otherwise wait for the run.
            cache.set(_failed_key(ticket["request_id"]), failure, TICKET_SECONDS)
    duration_ms = _ms(started)
    await VoiceRun.objects.acreate(
        workspace=request.workspace,
        user=request.user,
        kind=VoiceRun.Kind.SPEECH,
        group=ticket["group"],
        request=ticket["body"],
        result={"content_type": relay.content_type, "slot": ticket["slot"]},
        file_id=relay.file_id,
        request_id=ticket["request_id"],
        cost=await relay.call.charged(),
        duration_ms=duration_ms,
        first_byte_ms=first_byte_ms,
    )


@workspace_view("playground.use")
@require_GET
async def status(request: HttpRequest) -> HttpResponse:
    """A player's status, polled while it streams: its cost and time once the run is kept."""
    ticket = _read_ticket(request, request.GET.get("ticket", ""))
    return await sync_to_async(_status)(request, ticket, request.GET["ticket"])


def _status(request: HttpRequest, ticket: dict, token: str) -> HttpResponse:
    names: dict[str, str] = {}  # the status shows no voice's name
    run = _runs(request).filter(request_id=ticket["request_id"]).first()
    if run is None:
        player = _player(request, names, body={}, ticket=token, request_id=ticket["request_id"])
        player["failed"] = cache.get(_failed_key(ticket["request_id"]), "")
        return render(request, TEMPLATE + "#player-status", {"player": player})
    links = media.sounds(request, [run.file_id])
    player = _player(request, names, run=run, links=links)
    player["ticket"] = token
    context = {"player": player} | _history(request)
    return render(request, TEMPLATE + "#player-status-and-history", context)


@workspace_view("playground.use")
@require_POST
async def preview(request: HttpRequest) -> HttpResponse:
    """A short sample of a voice: spoken once for the workspace, then its kept file."""
    voices, voices_error = await _voices(request)
    voice = request.POST.get("voice", "")
    names = _names(voices)
    if voice not in names:
        message = voices_error or "Pick one of the voices."
        return HttpResponse(message, status=400, content_type="text/plain")
    cached = f"playground.voice.preview:{request.workspace.pk}:{voice}"
    file_id = await cache.aget(cached)
    if file_id:
        links = await sync_to_async(media.sounds)(request, [file_id])
        if file_id in links:
            return HttpResponseRedirect(links[file_id])
    body = {"input": PREVIEW_TEXT.format(name=names[voice]), "voice": voice,
            "response_format": "mp3"}  # fmt: skip
    try:
        (data, content_type, file_id), _ = await audio.speak(
            media.caller_of(request), body, request_id=new_request_id(), request=request
        )
    except ApiError as exc:
        return HttpResponse(_explain(exc), status=exc.status, content_type="text/plain")
    await cache.aset(cached, file_id, PREVIEW_SECONDS)
    return HttpResponse(data, content_type=content_type)


# --- speech to text --------------------------------------------------------------------


def _transcription_form_response(
    request: HttpRequest, form: TranscriptionForm, *, status: int, **errors: str
) -> HttpResponse:
    context = _form_context([]) | {"transcription_form": form} | errors
    response = render(request, TEMPLATE + "#transcription-form", context, status=status)
    return reswap(retarget(response, "#voice-transcribe-form"), "outerHTML")


def _transcription_fields(form: TranscriptionForm) -> dict:
    """The form's fields as the call takes them (besides the file)."""
    fields = {"response_format": "json"}
    if form.cleaned_data.get("language"):
        fields["language"] = form.cleaned_data["language"]
    return fields


@workspace_view("playground.use")
@require_POST
async def transcribe(request: HttpRequest) -> HttpResponse:
    form = TranscriptionForm(request.POST, request.FILES)
    respond = sync_to_async(_transcription_form_response)
    if not form.is_valid():
        return await respond(request, form, status=400)
    upload = form.cleaned_data["file"]
    if upload is None:
        return await respond(request, form, status=400, file_error=NO_AUDIO)
    fields = _transcription_fields(form)
    request_id = new_request_id()
    started = time.monotonic()
    try:
        answer, call = await audio.transcribe(
            media.caller_of(request), {"file": upload} | fields, request_id=request_id,
            request=request,
        )  # fmt: skip
    except ApiError as exc:
        if exc.status in (400, 413):
            error = f"{upload.name}: {exc.detail}" if upload.name else exc.detail
            return await respond(request, form, status=400, file_error=error)
        return await respond(request, form, status=200, transcription_error=_explain(exc))
    duration_ms = _ms(started)
    run = await VoiceRun.objects.acreate(
        workspace=request.workspace,
        user=request.user,
        kind=VoiceRun.Kind.TRANSCRIPTION,
        request=fields | {"filename": upload.name or "audio"},
        result={
            "text": answer.get("text", ""),
            "language": answer.get("language") or "",
            "duration": answer.get("duration"),
        },
        request_id=request_id,
        cost=await call.charged(),
        duration_ms=duration_ms,
    )
    return await sync_to_async(_transcription_response)(request, run, form)


def _transcription_response(
    request: HttpRequest, run: VoiceRun, form: TranscriptionForm
) -> HttpResponse:
    again = TranscriptionForm(initial={"language": form.cleaned_data.get("language", "")})
    card = {"kind": "transcription", "run": run, "id": run.request_id}
    context = _form_context([]) | {"card": card, "transcription_form": again}
    context |= _history(request, run)
    return render(request, TEMPLATE + "#transcription-card-and-form", context)


# --- code, history ---------------------------------------------------------------------


# Beside the snippets: why the Python ones name a model the page did not send.
CODE_NOTE = "The OpenAI SDK asks for a model: any of the console's models does."


def _run_snippets(run: VoiceRun, base_url: str) -> list[code.Snippet]:
    if run.kind == VoiceRun.Kind.SPEECH:
        return code.speech_snippets(run.request, base_url)
    fields = {k: v for k, v in run.request.items() if k != "filename"}
    return code.transcription_snippets(fields, base_url, run.request.get("filename") or "audio")


@workspace_view("playground.use")
@require_http_methods(["GET", "POST"])
async def view_code(request: HttpRequest) -> HttpResponse:
    """A run's exact request as code (`?run=`), or what a form would send now (POST)."""
    base_url = request.build_absolute_uri("/v1").rstrip("/")
    if request.method == "GET":
        run = await sync_to_async(_get_run_for_member)(request, request.GET.get("run"))
        context = {"snippets": _run_snippets(run, base_url)}
    elif request.POST.get("kind") == "transcription":
        form = TranscriptionForm(request.POST)
        if form.is_valid():
            context = {
                "snippets": code.transcription_snippets(_transcription_fields(form), base_url)
            }
        else:
            context = {"code_error": runs.form_errors(form)}
    else:
        voices, voices_error = await _voices(request)
        form = SpeechForm(request.POST, voices=_choices(voices))
        if voices_error:
            context = {"code_error": voices_error}
        elif form.is_valid():
            bodies = form.bodies()
            context = {"snippets": code.speech_snippets(bodies[0], base_url)}
            if len(bodies) > 1:
                context["code_note"] = "To compare, send it again with the second voice."
        else:
            context = {"code_error": runs.form_errors(form)}
    if "snippets" in context:
        context["code_note"] = " ".join(filter(None, [CODE_NOTE, context.get("code_note")]))
    return await sync_to_async(render)(request, TEMPLATE + "#code", context)


@workspace_view("playground.use")
@require_POST
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Forget one of the member's runs, both speeches of a comparison (the audio files stay
    the workspace's until purged)."""
    run = _get_run_for_member(request, pk)
    runs = _with_group(request, run)
    was_open = request.POST.get("open") in {str(r.pk) for r in runs}
    _runs(request).filter(pk__in=[r.pk for r in runs]).delete()
    if was_open:
        return HttpResponseClientRedirect(
            reverse("playground_voice", args=[request.workspace.slug])
        )
    return render(request, TEMPLATE + "#history", _history(request))


urlpatterns = [
    path("", page, name="playground_voice"),
    path("speak/", speak, name="playground_voice_speak"),
    path("stream/", stream, name="playground_voice_stream"),
    path("status/", status, name="playground_voice_status"),
    path("preview/", preview, name="playground_voice_preview"),
    path("transcribe/", transcribe, name="playground_voice_transcribe"),
    path("code/", view_code, name="playground_voice_code"),
    path("runs/<int:pk>/delete/", delete, name="playground_voice_delete"),
]
