"""A conversation's message tree: the thread a column shows, its branches, and its totals.

Every message has a parent (none for the first) and a column. Regenerating a reply
or editing a message adds a sibling: same parent, same column. A column shows the
path from the first message down to its leaf, and each message on it offers its
siblings (‹ 2/3 ›). In a comparison each column continues its own path; the
messages the columns share (the conversation before the comparison started) belong
to the column they were written in and are shown read-only in the others.
"""

import json
import re
from collections import defaultdict
from dataclasses import dataclass

from django.db.models import Count, Sum
from django.utils.safestring import SafeString

from playground.models import Conversation, Message, Role, Status
from playground.rendering import render_markdown


@dataclass
class Turn:
    """A message as one column shows it."""

    message: Message
    position: int
    count: int
    previous_id: int | None
    next_id: int | None
    own: bool
    html: SafeString | None = None

    @property
    def has_branches(self) -> bool:
        return self.own and self.count > 1


@dataclass
class Totals:
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: int = 0

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


class Tree:
    """All the messages of one conversation, loaded at once."""

    def __init__(self, messages: list[Message]) -> None:
        self.by_id = {m.pk: m for m in messages}
        self.children: dict[tuple[int | None, int], list[Message]] = defaultdict(list)
        for message in sorted(messages, key=lambda m: (m.created_at, m.pk)):
            self.children[(message.parent_id, message.column)].append(message)

    def add(self, message: Message) -> None:
        self.by_id[message.pk] = message
        self.children[(message.parent_id, message.column)].append(message)

    def get(self, pk: object) -> Message | None:
        return self.by_id.get(pk) if isinstance(pk, int) else None

    def path(self, leaf: Message | None) -> list[Message]:
        """From the first message down to `leaf`."""
        path = []
        while leaf is not None:
            path.append(leaf)
            leaf = self.by_id.get(leaf.parent_id) if leaf.parent_id else None
        return path[::-1]

    def siblings(self, message: Message) -> list[Message]:
        return self.children[(message.parent_id, message.column)]

    def latest_leaf(self, message: Message, column: int) -> Message:
        """Follow the newest branch down from `message`, preferring the column's own messages."""
        while True:
            below = self.children.get((message.pk, column)) or self.children.get(
                (message.pk, message.column)
            )
            if not below:
                return message
            message = below[-1]

    def turn(self, message: Message, column: int) -> Turn:
        siblings = self.siblings(message)
        index = next(i for i, m in enumerate(siblings) if m.pk == message.pk)
        return Turn(
            message=message,
            position=index + 1,
            count=len(siblings),
            previous_id=siblings[index - 1].pk if index > 0 else None,
            next_id=siblings[index + 1].pk if index + 1 < len(siblings) else None,
            own=message.column == column,
            html=reply_html(message) if message.role == Role.ASSISTANT else None,
        )

    def turns(self, leaf: Message | None, column: int) -> list[Turn]:
        return [self.turn(message, column) for message in self.path(leaf)]


def reply_html(message: Message) -> SafeString:
    """A reply as HTML: Markdown, or highlighted JSON when the request asked for JSON."""
    response_format = (message.params or {}).get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema") and message.content:
        text = message.content
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass  # still being written, or not JSON after all: shown as it is
        fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
        return render_markdown(f"{fence}json\n{text}\n{fence}")
    return render_markdown(message.content)


def messages_for_request(path: list[Message], system: str) -> list[dict]:
    """The chat messages a path stands for, with images as `image_url` content parts."""
    messages: list[dict] = []
    if system.strip():
        messages.append({"role": "system", "content": system})
    for message in path:
        if message.role == Role.USER and message.images:
            parts: list[dict] = [{"type": "text", "text": message.content}]
            parts += [{"type": "image_url", "image_url": {"url": uri}} for uri in message.images]
            messages.append({"role": "user", "content": parts})
        else:
            messages.append({"role": message.role, "content": message.content})
    return messages


def title_from(text: str, images: int = 0) -> str:
    words = " ".join(text.split())
    if not words:
        return "Image question" if images else "New conversation"
    if len(words) <= 60:
        return words
    return words[:60].rsplit(" ", 1)[0] + "…"


def _totals(rows: dict) -> Totals:
    return Totals(
        calls=rows["calls"] or 0,
        tokens_in=rows["tokens_in"] or 0,
        tokens_out=rows["tokens_out"] or 0,
        cost=rows["cost"] or 0,
    )


def _calls(conversation: Conversation):
    return (
        Message.objects.filter(conversation=conversation, role=Role.ASSISTANT)
        .exclude(request_id="")
        .exclude(status=Status.STREAMING)
    )


_AGGREGATES = {
    "calls": Count("pk"),
    "tokens_in": Sum("tokens_in"),
    "tokens_out": Sum("tokens_out"),
    "cost": Sum("cost"),
}


def totals(conversation: Conversation | None) -> Totals:
    """Every call made in the conversation, on every branch: what it has cost so far."""
    if conversation is None:
        return Totals()
    return _totals(_calls(conversation).aggregate(**_AGGREGATES))


async def atotals(conversation: Conversation) -> Totals:
    return _totals(await _calls(conversation).aaggregate(**_AGGREGATES))
