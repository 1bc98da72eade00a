"""`POST /v1/chat/completions` and `POST /v1/responses`."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from upstream import sse
from upstream.simulator import fields
from upstream.simulator.replies import (
    REPLY_MARKER,
    Completion,
    ToolCall,
    Turn,
    choose_tool,
    content_parts,
    conversation,
    last_user,
    limit,
    prompt_tokens,
    reply_text,
    structured_text,
    thinking_text,
)
from upstream.simulator.web import ApiError, Request, Response, StreamingResponse, json_response
from upstream.tokens import count_tokens, tokenize

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
MAX_MESSAGES = 200
# `n`: how many choices one completion may have.
MAX_CHOICES = 8


def _turns_from_messages(messages: Any) -> list[Turn]:
    if not isinstance(messages, list):
        raise ApiError(400, "The 'messages' field must be an array.")
    if not messages:
        raise ApiError(400, "The 'messages' field must contain at least one message.")
    if len(messages) > MAX_MESSAGES:
        raise ApiError(400, f"The 'messages' field allows at most {MAX_MESSAGES} messages.")
    tool_names: dict[str, str] = {}
    turns = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"The '{where}' field must be an object.")
        role = message.get("role")
        if role is None:
            raise ApiError(400, f"The '{where}.role' field is required.")
        if role not in ROLES:
            raise ApiError(400, f"The '{where}.role' field must be one of: {', '.join(ROLES)}.")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ApiError(400, f"The '{where}.content' field must be a string or an array.")
        if content is None and role in ("system", "developer", "user"):
            raise ApiError(400, f"The '{where}.content' field is required.")
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                tool_names[str(call.get("id"))] = str(call["function"].get("name"))
        text, images = content_parts(content)
        name = message.get("name") or tool_names.get(str(message.get("tool_call_id")))
        turns.append(Turn("tool" if role == "function" else role, text, images, name))
    return turns


def _stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop):
        return stop
    raise ApiError(400, "The 'stop' field must be a string or an array of up to 4 strings.")


def _response_format(body: dict[str, Any], name: str = "response_format") -> dict[str, Any] | None:
    value = fields.object_(body, name)
    if value is None:
        return None
    kind = value.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise ApiError(
            400, f"The '{name}.type' field must be one of: text, json_object, json_schema."
        )
    if kind == "json_schema" and not isinstance(value.get("json_schema", value), dict):
        raise ApiError(400, f"The '{name}.json_schema' field must be an object.")
    return value


# Tools that the API runs itself (the Responses API's built-in tools): Mira has none, so a
# request that offers one is refused, naming it, rather than answered without it.
BUILT_IN_TOOLS = (
    "web_search", "web_search_preview", "file_search", "computer_use_preview",
    "code_interpreter", "image_generation", "local_shell", "shell", "mcp", "apply_patch",
)  # fmt: skip


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The offered functions, each as `{"type": "function", "function": {...}}`.

    Chat nests a function's fields under `function`; the Responses API puts them on the
    tool itself, groups some under a `namespace` tool (a call then names both), and has
    `custom` tools that take free text. A namespaced function keeps its namespace, and a
    custom tool its kind, beside the function."""
    tools = fields.list_(body, "tools", 128) or []
    functions: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise ApiError(400, f"The '{where}' field must be an object.")
        kind = tool.get("type", "function")
        if kind in BUILT_IN_TOOLS or str(kind).startswith("web_search_"):
            raise ApiError(
                400,
                f"The '{where}' tool is the built-in tool {kind!r}, which Mira does not have: "
                "offer it as a function, or leave it out.",
            )
        if kind == "namespace":
            members = tool.get("tools")
            if not isinstance(tool.get("name"), str) or not isinstance(members, list):
                raise ApiError(400, f"The '{where}' namespace needs a 'name' and 'tools'.")
            for position, member in enumerate(members):
                function = _function(member, f"{where}.tools[{position}]")
                functions.append({**function, "namespace": tool["name"]})
            continue
        if kind not in ("function", "custom"):
            raise ApiError(400, f"The '{where}.type' field {kind!r} is not a known tool type.")
        functions.append(_function(tool, where))
    return functions


def _function(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise ApiError(400, f"The '{where}' field must be an object.")
    if tool.get("type") == "custom":
        if not isinstance(tool.get("name"), str):
            raise ApiError(400, f"The '{where}.name' field is required.")
        # One string of free text: what the prompt quotes, if anything.
        schema = {"type": "object", "properties": {"content": {"type": "string"}}}
        function = {"name": tool["name"], "parameters": schema}
        return {"type": "function", "function": function, "custom": True}
    function = tool.get("function")
    if function is None:
        function = tool
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ApiError(400, f"The '{where}.function.name' field is required.")
    return {"type": "function", "function": function}


class Answer:
    """Everything a chat-like endpoint needs to render one answer."""

    def __init__(self, body: dict[str, Any], turns: list[Turn], max_tokens: int | None) -> None:
        self.model: str = body["model"]
        self.prompt_tokens = prompt_tokens(turns)
        self.turns = turns = conversation(turns)
        self.tools = _tools(body)
        self.tool_call: ToolCall | None = choose_tool(self.tools, body.get("tool_choice"), turns)
        self.thinking = thinking_text(turns) if self.model == "mira-thinking" else None
        if self.tool_call is not None:
            self.completion = Completion("", "tool_calls", count_tokens(self.tool_call.arguments))
            return
        text = reply_text(turns, self.model)
        structured = structured_text(
            body.get("response_format") or _text_format(body), text, self.model
        )
        if structured is not None and not text_is_marked(turns):
            text = structured
        self.completion = limit(text, max_tokens=max_tokens, stop=_stop(body))

    def tool(self) -> dict[str, Any]:
        """The offered tool that the answer calls."""
        assert self.tool_call is not None
        name = self.tool_call.name
        return next(t for t in self.tools if t["function"]["name"] == name)

    @property
    def thinking_tokens(self) -> int:
        return count_tokens(self.thinking) if self.thinking else 0


def text_is_marked(turns: list[Turn]) -> bool:
    user = last_user(turns)
    return bool(user and REPLY_MARKER.search(user.text))


def _text_format(body: dict[str, Any]) -> dict[str, Any] | None:
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        fmt = dict(text["format"])
        if fmt.get("type") == "json_schema" and "json_schema" not in fmt:
            fmt["json_schema"] = {"schema": fmt.get("schema")}
        return fmt
    return None


# --- chat completions ---------------------------------------------------------------


async def chat_completions(sim: Any, request: Request) -> Response | StreamingResponse:
    body = request.json()
    fields.model(body, fields.CHAT_MODELS)
    turns = _turns_from_messages(fields.required(body, "messages"))
    fields.number(body, "temperature", 0, 2)
    fields.number(body, "top_p", 0, 1)
    cap = fields.MODEL_INFO[body["model"]]["max_output_tokens"]
    max_tokens = fields.integer(body, "max_completion_tokens", 1, 1_000_000)
    max_tokens = fields.integer(body, "max_tokens", 1, 1_000_000, max_tokens)
    max_tokens = min(max_tokens or cap, cap)
    choices = fields.integer(body, "n", 1, MAX_CHOICES, 1) or 1
    stream = fields.boolean(body, "stream")
    options = fields.object_(body, "stream_options") or {}
    _response_format(body)
    answer = Answer(body, turns, max_tokens)
    completion_id = f"chatcmpl-{str(uuid.uuid4())[:24]}"
    created = int(time.time())
    if stream:
        include_usage = bool(options.get("include_usage"))
        pieces = _chat_chunks(answer, completion_id, created, include_usage, choices)
        return StreamingResponse(pieces)
    message: dict[str, Any] = {"role": "assistant", "content": answer.completion.text}
    if answer.tool_call is not None:
        message["content"] = None
        message["tool_calls"] = [_tool_call_json(answer.tool_call)]
    if answer.thinking:
        message["thinking"] = answer.thinking
    return json_response(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": answer.model,
            "choices": [
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": answer.completion.finish_reason,
                }
                for index in range(choices)
            ],
            "usage": _chat_usage(answer, choices),
        }
    )


def _tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _chat_usage(answer: Answer, choices: int = 1) -> dict[str, Any]:
    """Usage as OpenAI counts it: every choice's tokens are completion tokens."""
    completion = answer.completion.tokens * choices
    usage = {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": answer.prompt_tokens + completion,
    }
    if answer.thinking:
        usage["thinking_tokens"] = answer.thinking_tokens * choices
        usage["total_tokens"] += answer.thinking_tokens * choices
    return usage


async def _chat_chunks(
    answer: Answer, completion_id: str, created: int, include_usage: bool, choices: int = 1
) -> AsyncIterator[bytes]:
    for index in range(choices):
        for piece in _choice_chunks(answer, completion_id, created, index):
            yield piece
    if include_usage:
        yield sse.encode(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": answer.model,
                "choices": [],
                "usage": _chat_usage(answer, choices),
            }
        )
    yield sse.encode_done()


def _choice_chunks(answer: Answer, completion_id: str, created: int, index: int) -> list[bytes]:
    """One choice's chunks, from the role to the finish reason (choices come one after another)."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse.encode(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": answer.model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
            }
        )

    chunks = [chunk({"role": "assistant", "content": ""})]
    if answer.thinking:
        chunks += [chunk({"thinking": piece}) for piece in tokenize(answer.thinking)]
    call = answer.tool_call
    if call is not None:
        head = {"index": 0, "id": call.id, "type": "function"}
        chunks.append(
            chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
        )
        chunks += [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in tokenize(call.arguments)
        ]
    else:
        chunks += [chunk({"content": piece}) for piece in tokenize(answer.completion.text)]
    chunks.append(chunk({}, answer.completion.finish_reason))
    return chunks


# --- responses ----------------------------------------------------------------------

# Input items that carry nothing the simulated model reads: its own earlier reasoning
# (opaque to anyone else) and references to items it stored.
_SILENT_ITEMS = ("reasoning", "item_reference", "compaction")
# Stored responses (for `previous_response_id`): this many, the oldest forgotten first.
MAX_STORED_RESPONSES = 1000


def _turns_from_input(body: dict[str, Any], earlier: list[Turn]) -> list[Turn]:
    turns: list[Turn] = list(earlier)
    instructions = fields.string(body, "instructions")
    if instructions:
        turns.insert(0, Turn("system", instructions))
    value = fields.required(body, "input")
    if isinstance(value, str):
        turns.append(Turn("user", value))
        return turns
    if not isinstance(value, list):
        raise ApiError(400, "The 'input' field must be a string or an array.")
    call_names: dict[str, str] = {}
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise ApiError(400, f"The 'input[{index}]' field must be an object.")
        kind = item.get("type", "message")
        if kind in ("function_call", "custom_tool_call"):
            call_names[str(item.get("call_id"))] = str(item.get("name"))
            continue
        if kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            text, _ = content_parts(output) if isinstance(output, list) else (output, [])
            text = text if isinstance(text, str) else json.dumps(output)
            turns.append(Turn("tool", text, [], call_names.get(str(item.get("call_id")))))
            continue
        if kind in _SILENT_ITEMS:
            continue
        if kind != "message":
            raise ApiError(400, f"The 'input[{index}].type' field {kind!r} is not supported.")
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise ApiError(
                400,
                f"The 'input[{index}].role' field must be one of: "
                "user, assistant, system, developer.",
            )
        text, images = content_parts(item.get("content"))
        turns.append(Turn(role, text, images))
    if len(turns) == len(earlier):
        raise ApiError(400, "The 'input' field must not be empty.")
    return turns


async def responses(sim: Any, request: Request) -> Response | StreamingResponse:
    body = request.json()
    fields.model(body, fields.CHAT_MODELS)
    earlier: list[Turn] = []
    previous = fields.string(body, "previous_response_id")
    if previous is not None:
        earlier = sim.stored_responses.get(previous)
        if earlier is None:
            raise ApiError(400, f"Previous response with id {previous!r} not found.")
    turns = _turns_from_input(body, earlier)
    fields.number(body, "temperature", 0, 2)
    fields.list_(body, "include")
    fields.object_(body, "reasoning")
    cap = fields.MODEL_INFO[body["model"]]["max_output_tokens"]
    max_tokens = fields.integer(body, "max_output_tokens", 1, 1_000_000)
    stream = fields.boolean(body, "stream")
    answer = Answer(body, turns, min(max_tokens or cap, cap))
    ids = _ResponseIds(
        response=f"resp_{uuid.uuid4().hex}",
        message=f"msg_{uuid.uuid4().hex}",
        reasoning=f"rs_{uuid.uuid4().hex}",
        encrypted="reasoning.encrypted_content" in (body.get("include") or ()),
    )
    if fields.boolean(body, "store", True):
        _store(sim, ids.response, turns, answer)
    created = int(time.time())
    if stream:
        return StreamingResponse(_response_events(answer, ids, created))
    return json_response(_response_object(answer, ids, created, "completed"))


def _store(sim: Any, response_id: str, turns: list[Turn], answer: Answer) -> None:
    """Keep the conversation so far, so that a later request can go on from it."""
    stored = sim.stored_responses
    reply = answer.completion.text
    if answer.tool_call is not None:
        reply = f"(called {answer.tool_call.name})"
    stored[response_id] = [*turns, Turn("assistant", reply)]
    while len(stored) > MAX_STORED_RESPONSES:
        del stored[next(iter(stored))]


class _ResponseIds:
    def __init__(self, *, response: str, message: str, reasoning: str, encrypted: bool) -> None:
        self.response = response
        self.message = message
        self.reasoning = reasoning
        self.encrypted = encrypted


def _reasoning_item(answer: Answer, ids: _ResponseIds) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "reasoning",
        "id": ids.reasoning,
        "summary": [{"type": "summary_text", "text": answer.thinking}],
    }
    if ids.encrypted:
        item["encrypted_content"] = base64.b64encode((answer.thinking or "").encode()).decode()
    return item


def _response_output(answer: Answer, ids: _ResponseIds) -> list[dict[str, Any]]:
    output = [_reasoning_item(answer, ids)] if answer.thinking else []
    call = answer.tool_call
    if call is None:
        content = [{"type": "output_text", "text": answer.completion.text, "annotations": []}]
        message = {"type": "message", "id": ids.message, "status": "completed"}
        return [*output, {**message, "role": "assistant", "content": content}]
    tool = answer.tool()
    if tool.get("custom"):
        text = json.loads(call.arguments).get("content", "")
        item = {"type": "custom_tool_call", "id": f"ctc_{call.id[5:]}", "input": text}
    else:
        item = {"type": "function_call", "id": f"fc_{call.id[5:]}", "arguments": call.arguments}
    item |= {"call_id": call.id, "name": call.name, "status": "completed"}
    if tool.get("namespace"):
        item["namespace"] = tool["namespace"]
    return [*output, item]


def _response_object(
    answer: Answer, ids: _ResponseIds, created: int, status: str
) -> dict[str, Any]:
    done = status == "completed"
    truncated = done and answer.completion.finish_reason == "length"
    output_tokens = answer.completion.tokens + answer.thinking_tokens
    usage = {
        "input_tokens": answer.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": answer.thinking_tokens},
        "total_tokens": answer.prompt_tokens + output_tokens,
    }
    return {
        "id": ids.response,
        "object": "response",
        "created_at": created,
        "model": answer.model,
        "status": "incomplete" if truncated else status,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "error": None,
        "output": _response_output(answer, ids) if done else [],
        "usage": usage if done else None,
    }


async def _response_events(answer: Answer, ids: _ResponseIds, created: int) -> AsyncIterator[bytes]:
    sequence = 0

    def event(kind: str, **data: Any) -> bytes:
        nonlocal sequence
        sequence += 1
        return sse.encode({"type": kind, "sequence_number": sequence, **data}, event=kind)

    yield event("response.created", response=_response_object(answer, ids, created, "in_progress"))
    final = _response_object(answer, ids, created, "completed")
    for position, item in enumerate(final["output"]):
        kind = item["type"]
        if kind == "reasoning":
            yield event(
                "response.output_item.added", output_index=position, item={**item, "summary": []}
            )
            part = {"type": "summary_text", "text": ""}
            where = {"item_id": item["id"], "output_index": position, "summary_index": 0}
            yield event("response.reasoning_summary_part.added", **where, part=part)
            for piece in tokenize(answer.thinking or ""):
                yield event("response.reasoning_summary_text.delta", **where, delta=piece)
            yield event("response.reasoning_summary_text.done", **where, text=answer.thinking)
            done_part = {**part, "text": answer.thinking}
            yield event("response.reasoning_summary_part.done", **where, part=done_part)
        elif kind == "message":
            text = answer.completion.text
            added = {**item, "status": "in_progress", "content": []}
            yield event("response.output_item.added", output_index=position, item=added)
            part = {"type": "output_text", "text": "", "annotations": []}
            where = {"item_id": item["id"], "output_index": position, "content_index": 0}
            yield event("response.content_part.added", **where, part=part)
            for piece in tokenize(text):
                yield event("response.output_text.delta", **where, delta=piece)
            yield event("response.output_text.done", **where, text=text)
            yield event("response.content_part.done", **where, part={**part, "text": text})
        else:
            field = "input" if kind == "custom_tool_call" else "arguments"
            added = {**item, "status": "in_progress", field: ""}
            yield event("response.output_item.added", output_index=position, item=added)
            where = {"item_id": item["id"], "output_index": position}
            name = (
                "custom_tool_call_input"
                if kind == "custom_tool_call"
                else "function_call_arguments"
            )
            for piece in tokenize(item[field]):
                yield event(f"response.{name}.delta", **where, delta=piece)
            yield event(f"response.{name}.done", **where, **{field: item[field]})
        yield event("response.output_item.done", output_index=position, item=item)
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield event(kind, response=final)
    yield sse.encode_done()
