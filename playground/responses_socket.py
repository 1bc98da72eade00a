"""The Responses page's websocket: a streamed `/v1/responses` call, relayed event by event.

It is the chat playground's socket (`playground.consumers`: the same sign-in, membership,
origin and close rules, and its stopping of runs on `stop`, a close or a sign-out) with
messages of its own. From the page: `send` `{fields}` (the form's fields) and `stop`. To
the page: `event` `{event}` (each upstream event as it comes), then `done` `{html,
history}` (the result as the page shows it, and the history) once the run is kept,
`stopped` after a `stop`, or `problem` `{message}`.

A stream that is stopped is booked for what it wrote, like a chat reply, and not kept.
"""

import asyncio
import contextlib
import time
from typing import Any

from django.template.loader import render_to_string

from gateway import pipeline
from gateway import responses as gateway_responses
from gateway.asgi import new_request_id
from gateway.catalog import held_output, output_limit
from gateway.errors import ApiError
from gateway.http import validate
from gateway.relay import relay
from playground.consumers import PlaygroundConsumer
from playground.models import ERROR_TITLES, ResponseRun
from playground.params import Invalid
from playground.responses import HISTORY_LENGTH, TEMPLATE, ResponseForm, result_context

RUN = 0  # the key of the page's one run in `runs`


class EventTranslator(gateway_responses.ResponsesTranslator):
    """Hands each upstream event on as it came (the base class notes usage and text)."""

    def keepalive(self) -> list:
        return []

    def chunk(self, chunk) -> list:
        super().chunk(chunk)
        return [chunk.data]

    def end(self) -> list:
        return []

    def pack(self, parts: list) -> list:
        return parts

    def error(self, error: ApiError) -> list:
        return [error]


async def _start(caller: pipeline.Caller, **kwargs) -> pipeline.Call:
    """`pipeline.start`, finished even when the run is cancelled while it holds the cost."""
    starting = asyncio.ensure_future(pipeline.start(caller, **kwargs))
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            call = await starting
            call.status, call.tokens_in = 499, 0
            await call.finish()
        raise


class ResponsesConsumer(PlaygroundConsumer):
    async def receive_json(self, content: Any, **kwargs) -> None:
        if not self.open:
            return
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "stop":
            stopping = bool(self.runs)
            await self._stop_all()
            if stopping:
                await self._send({"type": "stopped"})
        elif kind == "send":
            await self.on_send(content)
        else:
            await self._problem("Unknown request.")

    async def on_send(self, content: dict) -> None:
        if self.runs:
            await self._problem("A response is still streaming: stop it first.")
            return
        fields = content.get("fields")
        form = ResponseForm(fields if isinstance(fields, dict) else {})
        if not form.is_valid():
            errors = [str(e) for errors in form.errors.values() for e in errors]
            await self._problem(" ".join(errors))
            return
        try:
            await self._may_still_use()
        except Invalid:
            return
        task = asyncio.create_task(self._run(form.body()))
        self.runs[RUN] = task
        task.add_done_callback(lambda done: self._forget(RUN, done))

    async def _run(self, body: dict) -> None:
        body = body | {"stream": True}
        request_id = new_request_id()
        caller = pipeline.as_member(workspace_id=self.workspace.pk, user_id=self.user.pk)
        started = time.monotonic()
        events: list[dict] = []
        final: dict = {}
        try:
            spec = validate(gateway_responses.ResponsesRequest, body)
            gateway_responses.check_tools(spec)
            body["max_output_tokens"] = limit = await output_limit(
                spec.model, spec.max_output_tokens
            )
            call = await _start(
                caller, request_id=request_id, product="responses",
                endpoint=gateway_responses.PATH, model=spec.model, stream=True,
                tokens_in=gateway_responses.prompt_tokens(spec),
                max_tokens=held_output(spec.model, limit),
            )  # fmt: skip
            streamed = await relay(
                call, gateway_responses.PATH, body, EventTranslator(include_usage=True),
                keepalive=False,
            )  # fmt: skip
            try:
                async for event in streamed.events():
                    if isinstance(event, ApiError):
                        raise event
                    events.append(event)
                    if isinstance(event.get("response"), dict):
                        final = event["response"]
                    await self._send({"type": "event", "event": event})
            finally:
                await streamed.close()
        except ApiError as exc:
            title = ERROR_TITLES.get(exc.status, "The call failed")
            await self._problem(f"{title} ({exc.status}): {exc.detail}")
            return
        except Invalid as exc:
            await self._problem(str(exc))
            return
        saved = await ResponseRun.objects.acreate(
            workspace=self.workspace,
            user=self.user,
            request=body,
            response=final,
            events=events,
            request_id=request_id,
            tokens_in=call.tokens_in,
            tokens_out=call.tokens_out,
            cost=await call.charged(),
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        await self._send({"type": "done", **await self._rendered(saved)})

    async def _rendered(self, saved: ResponseRun) -> dict:
        runs = ResponseRun.objects.for_member(self.workspace, self.user)[:HISTORY_LENGTH]
        context = {
            "workspace": self.workspace,
            "result": result_context(saved),
            "history": [run async for run in runs],
            "current_id": saved.pk,
        }
        html = render_to_string(TEMPLATE + "#result", context)
        history = render_to_string(TEMPLATE + "#history", context)
        return {"html": html, "history": history}
