"""Deterministic model answers: the same conversation always gets the same reply.

A user message containing `reply with:` makes the reply exactly the text after the
marker (to the end of that message), so tests can make the model return markup,
code blocks or anything else. Otherwise the reply quotes the question, names its
key words and says it comes from the simulator: several sentences, so that streams
have many chunks.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from upstream.tokens import count_tokens, tokenize

REPLY_MARKER = re.compile(r"reply with:[ \t]?(.*)", re.IGNORECASE | re.DOTALL)
_WORD = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)
_STOPWORDS = frozenset(
    "about above after again also an and any are because been before being below between "
    "both but can could did does doing down during each few for from further had has have "
    "having here how into its itself just more most much must not now off once only other "
    "our out over own please same should some such than that the their them then there "
    "these they this those through too under until very was were what when where which "
    "while who whom why will with would you your tell give make explain".split()
)
_CLOSINGS = (
    "A real model would weigh them step by step before answering.",
    "A real model would add examples and check its reasoning before answering.",
    "A real model would compare a few approaches and pick the clearest one.",
    "A real model would start from the basics and build up to the details.",
)


@dataclass
class Image:
    """An image part of a message: what the simulator can tell about it."""

    media_type: str | None = None
    width: int | None = None
    height: int | None = None
    url: str | None = None

    def describe(self) -> str:
        if self.width and self.height:
            kind = (self.media_type or "image").split("/")[-1].upper()
            return f"a {kind} image of {self.width}x{self.height} pixels"
        if self.url:
            host = re.sub(r"^https?://([^/]+).*$", r"\1", self.url)
            return f"an image from {host}"
        return "an image I could not decode"


@dataclass
class Turn:
    role: str
    text: str
    images: list[Image] = field(default_factory=list)
    name: str | None = None


def read_image(url: str) -> Image:
    if not url.startswith("data:"):
        return Image(url=url)
    header, _, payload = url.partition(",")
    media_type = header[5:].split(";")[0] or None
    try:
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(base64.b64decode(payload))) as picture:
            return Image(media_type, picture.width, picture.height)
    except Exception:  # noqa: BLE001 - an undecodable image is described as such
        return Image(media_type)


def content_parts(content: Any) -> tuple[str, list[Image]]:
    """The text and images of an OpenAI-style `content` (string or list of parts)."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[Image] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "input_image"):
            ref = part.get("image_url")
            if isinstance(ref, dict):
                ref = ref.get("url")
            if isinstance(ref, str):
                images.append(read_image(ref))
    return "\n".join(texts), images


# Context a client attaches to the user's turn (coding agents send reminders and their
# environment this way): not something the user said, so it is neither quoted nor
# searched for tool names.
_CLIENT_CONTEXT = re.compile(
    r"<(system-reminder|environment_context|user_instructions|permissions instructions)>"
    r".*?</\1>\s*",
    re.DOTALL,
)


def said(text: str) -> str:
    """What the user wrote, without the context a client attached to it."""
    if "<" not in text:
        return text
    return _CLIENT_CONTEXT.sub("", text).strip()


def conversation(turns: list[Turn]) -> list[Turn]:
    """The turns the answer is drawn from: user turns without attached context, and
    none that said nothing (a turn of reminders alone follows a tool result in some
    clients, and must not hide it)."""
    out = []
    for turn in turns:
        if turn.role == "user":
            text = said(turn.text)
            if not text and not turn.images:
                continue
            if text is not turn.text:
                turn = Turn(turn.role, text, turn.images, turn.name)
        out.append(turn)
    return out


def last_user(turns: list[Turn]) -> Turn | None:
    for turn in reversed(turns):
        if turn.role == "user":
            return turn
    return None


def keywords(text: str, limit: int = 3) -> list[str]:
    seen: list[str] = []
    for word in _WORD.findall(text.lower()):
        word = word.strip("'-")
        if len(word) > 3 and word not in _STOPWORDS and word not in seen:
            seen.append(word)
    return sorted(seen, key=lambda w: (-len(w), seen.index(w)))[:limit]


def _quote(text: str, words: int = 14) -> str:
    parts = text.split()
    quoted = " ".join(parts[:words])
    return quoted + ("…" if len(parts) > words else "")


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def reply_text(turns: list[Turn], model: str) -> str:
    """The assistant's answer to a conversation."""
    user = last_user(turns)
    if user is not None:
        marker = REPLY_MARKER.search(user.text)
        if marker:
            return marker.group(1).strip()
    last = turns[-1] if turns else None
    if last is not None and last.role == "tool":
        name = last.name or "the tool"
        return (
            f"The tool {name} returned: {last.text.strip()[:400]}. "
            "Based on that result, this is the simulated final answer."
        )
    if user is None or not (user.text.strip() or user.images):
        return "Hello! This is the Mira simulator. Ask me anything and I will answer."
    sentences = []
    if user.text.strip():
        sentences.append(f'You asked: "{_quote(user.text.strip())}"')
    for image in user.images:
        sentences.append(f"I can see {image.describe()}.")
    sentences.append(
        "This is the Mira simulator, so the answer is made up, but it is deterministic: "
        "the same conversation always gets the same reply."
    )
    words = keywords(user.text)
    if words:
        sentences.append(f"The key words here are {_join(words)}.")
    digest = hashlib.sha256(user.text.encode()).digest()
    sentences.append(_CLOSINGS[digest[0] % len(_CLOSINGS)])
    sentences.append(f"This reply came from {model} with {len(turns)} messages of context.")
    return " ".join(s if s.endswith((".", "?", "!", "…")) else s + "." for s in sentences)


def thinking_text(turns: list[Turn]) -> str:
    user = last_user(turns)
    topic = _quote(user.text.strip(), 8) if user and user.text.strip() else "a greeting"
    return f"The user wrote about {topic}. I will answer briefly and deterministically."


@dataclass
class Completion:
    """An answer cut to the limits the request set."""

    text: str
    finish_reason: str
    tokens: int


def limit(text: str, *, max_tokens: int | None, stop: list[str]) -> Completion:
    finish = "stop"
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    pieces = tokenize(text)
    if max_tokens is not None and len(pieces) > max_tokens:
        text = "".join(pieces[:max_tokens])
        finish = "length"
    return Completion(text, finish, count_tokens(text))


def prompt_tokens(turns: list[Turn]) -> int:
    return sum(count_tokens(t.text) + 4 + 85 * len(t.images) for t in turns) + 2


# --- structured output and tools --------------------------------------------------


def _string_for(key: str, prompt: str) -> str:
    # Code in backticks first (`echo hi` is how a prompt names a command), then quotes.
    quoted = re.search(r"`([^`]{1,200})`", prompt) or re.search(
        r"[\"“']([^\"”']{1,80})[\"”']", prompt
    )
    if key.lower() in ("query", "q", "text", "prompt", "question", "input", "message"):
        return prompt.strip()[:120] or "example"
    if quoted:
        return quoted.group(1)
    capitals = re.findall(r"(?<=[\s,(])([A-Z][\w-]+)", " " + prompt)
    capitals = [c for c in capitals[1:] if c.lower() not in _STOPWORDS] or capitals
    if capitals and key.lower() in ("location", "city", "place", "country", "name", "where"):
        return capitals[-1]
    words = keywords(prompt, 1)
    return words[0] if words else "example"


def sample(
    schema: Any, prompt: str, key: str = "value", depth: int = 0, *, lean: bool = False
) -> Any:
    """A value that satisfies a (simple) JSON schema, filled from the prompt. A `lean`
    object has only its required properties, as a model's tool call would."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for combo in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(combo), list) and schema[combo]:
            return sample(schema[combo][0], prompt, key, depth + 1, lean=lean)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        required = schema.get("required")
        return {
            name: sample(sub, prompt, name, depth + 1, lean=lean)
            for name, sub in properties.items()
            if isinstance(name, str)
            and not (lean and isinstance(required, list) and name not in required)
        }
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1) or 1))
        items = schema.get("items") or {}
        return [sample(items, prompt, key, depth + 1, lean=lean) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if schema.get("format") == "date":
        return "2025-01-01"
    if schema.get("format") == "date-time":
        return "2025-01-01T00:00:00Z"
    return _string_for(key, prompt)


def structured_text(response_format: dict[str, Any] | None, text: str, model: str) -> str | None:
    """The JSON text to answer with when a JSON response format was asked for."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return json.dumps({"answer": text, "model": model})
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return json.dumps(sample(schema or {"type": "object"}, text))
    return None


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


def _names(name: str, prompt: str) -> bool:
    """Whether the prompt names the tool: its name as a word of its own, any case."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", prompt, re.IGNORECASE) is not None


def choose_tool(tools: list[Any], tool_choice: Any, turns: list[Turn]) -> ToolCall | None:
    """A call to one of the offered tools, when the conversation asks for one."""
    functions = [
        t["function"]
        for t in tools
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name")
    ]
    if not functions or tool_choice == "none" or (turns and turns[-1].role == "tool"):
        return None
    user = last_user(turns)
    prompt = user.text if user else ""
    if user is not None and REPLY_MARKER.search(prompt):
        return None
    chosen = None
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
        chosen = next((f for f in functions if f["name"] == wanted), None)
    if chosen is None:
        for function in functions:
            name = function["name"]
            if _names(name, prompt) or ("_" in name and _names(name.replace("_", " "), prompt)):
                chosen = function
                break
    if chosen is None and (
        tool_choice == "required" or re.search(r"\b(call|use the tool|use a tool)\b", prompt, re.I)
    ):
        chosen = functions[0]
    if chosen is None:
        return None
    arguments = sample(chosen.get("parameters") or {"type": "object"}, prompt, lean=True)
    digest = hashlib.sha256((chosen["name"] + prompt).encode()).hexdigest()[:24]
    return ToolCall(f"call_{digest}", chosen["name"], json.dumps(arguments))
