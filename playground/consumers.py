"""The chat playground's websocket: one per open page, serving one member in one workspace.

Connecting needs a signed-in session (anonymous: closed with 4401) and a membership of
the workspace in the URL whose role may use the playground (otherwise closed with
4403); the origin was checked by `AllowedHostsOriginValidator` before this runs.

Messages from the page (JSON, each with a `type`):

- `send`: `{conversation, text, images, settings}`, a new user message in every
  column (a new conversation when `conversation` is null), then one reply per column;
- `regenerate`: `{conversation, column, message, settings}`, another reply to the
  same question, kept beside the earlier ones;
- `edit`: `{conversation, column, message, text, settings}`, a new version of a
  message beside the old one; a user message is then answered again;
- `switch`: `{conversation, column, message}`, show another branch;
- `show`: `{conversation, column, leaf}`, render a column (a new comparison column);
- `save`: `{conversation, settings}`, remember the settings;
- `stop`: cancel every reply in progress.

Messages to the page: `conversation` `{id, title, url}`; `column` `{column, leaf,
html}` (a column's whole thread); `delta` `{id, html, tokens}` (the reply so far,
rendered and sanitized, at most every `PACE` seconds); `message` `{id, column, html}`
(a reply's final rendering with its metrics or error); `totals` `{html}`; `idle`
when nothing streams any more; `problem` `{message}` for a request that was refused.

Each reply streams in its own `asyncio.Task`, kept in `self.runs`: `stop` and
`disconnect()` cancel and await them, and each run saves its message and books its
call in `finally`, so nothing waits for a reply to end and no call is lost.

The server closes the socket, after stopping its replies the same way, when its session
signs out (4401) or its member loses the playground in the workspace (4403): see
`playground.sockets`.
"""

import asyncio
import logging
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership
from gateway.pipeline import as_member
from playground import conversations, sockets
from playground.chat import ChatRun
from playground.conversations import Tree
from playground.models import Conversation, Message, Role, Status
from playground.params import Invalid, Settings, parse_images, parse_settings, parse_text

logger = logging.getLogger(__name__)

TEMPLATE = "playground/playground.html"
PACE = 0.05  # seconds between two renderings of a streaming reply


class PlaygroundConsumer(AsyncJsonWebsocketConsumer):
    # The channel layer carries only the closes of `playground.sockets` (a sign-out, a lost
    # membership); the page's own messages never go through it.

    async def connect(self) -> None:
        self.runs: dict[int, asyncio.Task] = {}
        self.streaming: set[int] = set()
        self.open = False
        self.joined: list[str] = []
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=sockets.SIGNED_OUT)
            return
        self.user = user
        self.slug = self.scope["url_route"]["kwargs"]["slug"]
        membership = await self._membership()
        if membership is None:
            await self.close(code=sockets.NOT_ALLOWED)
            return
        self.workspace = membership.workspace
        self.can_manage_billing = membership.can("billing.manage")
        await self._join(
            sockets.session_group(self.scope["session"].session_key),
            sockets.member_group(user_id=user.pk, workspace_id=self.workspace.pk),
        )
        self.open = True
        await self.accept()

    async def disconnect(self, code: int) -> None:
        # Closing the tab stops its replies; each one books its call as it ends.
        self.open = False
        await self._stop_all()
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _join(self, *groups: str) -> None:
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)

    async def playground_close(self, event: dict) -> None:
        """This page's session signed out, or its member may no longer use the playground:
        stop the replies (each one is saved and booked as it ends), then close."""
        if not self.open:
            return
        await self._stop_all()
        self.open = False
        await self.close(code=event["code"])

    async def _membership(self) -> Membership | None:
        membership = (
            await Membership.objects.select_related("workspace")
            .filter(user=self.user, workspace__slug=self.slug)
            .afirst()
        )
        if membership is None or not membership.can("playground.use"):
            return None
        return membership

    # --- messages from the page ----------------------------------------------------------

    async def receive_json(self, content: Any, **kwargs) -> None:
        if not self.open:
            return  # closed by the server; what the page sent meanwhile is not answered
        handlers = {
            "send": self.on_send,
            "regenerate": self.on_regenerate,
            "edit": self.on_edit,
            "switch": self.on_switch,
            "show": self.on_show,
            "save": self.on_save,
            "stop": self.on_stop,
        }
        kind = content.get("type") if isinstance(content, dict) else None
        handler = handlers.get(kind)
        if handler is None:
            await self._problem("Unknown request.")
            return
        try:
            await handler(content)
        except Invalid as exc:
            await self._problem(str(exc))

    async def on_stop(self, content: dict) -> None:
        await self._stop_all()

    async def on_save(self, content: dict) -> None:
        conversation = await self._conversation(content)
        settings = parse_settings(content.get("settings"))
        tree = await self._tree(conversation)
        await self._save(conversation, settings, tree)

    async def on_send(self, content: dict) -> None:
        self._not_busy()
        text = parse_text(content.get("text"))
        images = parse_images(content.get("images"))
        if not text.strip() and not images:
            raise Invalid("Write a message or attach an image first.")
        settings = parse_settings(content.get("settings"))
        await self._may_still_use()
        if content.get("conversation") is None:
            for column in settings.columns:
                column.leaf = None
            conversation = await Conversation.objects.acreate(
                workspace=self.workspace,
                user=self.user,
                title=conversations.title_from(text, len(images)),
                settings=settings.model_dump(),
            )
            url = reverse("playground", kwargs={"slug": self.slug}) + f"?c={conversation.pk}"
            await self.send_json(
                {
                    "type": "conversation",
                    "id": conversation.pk,
                    "title": conversation.title,
                    "url": url,
                }
            )
            tree = Tree([])
        else:
            conversation = await self._conversation(content)
            tree = await self._tree(conversation)
        leaves = [self._leaf(tree, column.leaf) for column in settings.columns]
        replies = []
        for index, leaf in enumerate(leaves):
            question = await Message.objects.acreate(
                conversation=conversation,
                parent=leaf,
                column=index,
                role=Role.USER,
                content=text,
                images=images,
                status=Status.WRITTEN,
            )
            tree.add(question)
            replies.append(await self._reply_to(conversation, tree, settings, index, question))
        await self._begin(conversation, tree, settings, replies)

    async def on_regenerate(self, content: dict) -> None:
        self._not_busy()
        conversation = await self._conversation(content)
        settings = parse_settings(content.get("settings"))
        await self._may_still_use()
        tree = await self._tree(conversation)
        index = self._column(content, settings)
        answer = tree.get(content.get("message"))
        if answer is None or answer.role != Role.ASSISTANT or answer.parent_id is None:
            raise Invalid("That reply is not in this conversation.")
        question = tree.get(answer.parent_id)
        reply = await self._reply_to(conversation, tree, settings, index, question)
        await self._begin(conversation, tree, settings, [reply])

    async def on_edit(self, content: dict) -> None:
        self._not_busy()
        conversation = await self._conversation(content)
        settings = parse_settings(content.get("settings"))
        tree = await self._tree(conversation)
        index = self._column(content, settings)
        original = tree.get(content.get("message"))
        if original is None:
            raise Invalid("That message is not in this conversation.")
        text = parse_text(content.get("text"))
        if not text.strip() and not original.images:
            raise Invalid("A message cannot be empty.")
        if original.role == Role.USER:
            await self._may_still_use()
        edited = await Message.objects.acreate(
            conversation=conversation,
            parent_id=original.parent_id,
            column=index,
            role=original.role,
            content=text,
            images=original.images,
            status=Status.WRITTEN,
        )
        tree.add(edited)
        if original.role == Role.ASSISTANT:
            settings.columns[index].leaf = edited.pk
            await self._save(conversation, settings, tree)
            await self._send_column(tree, index, edited.pk)
            return
        reply = await self._reply_to(conversation, tree, settings, index, edited)
        await self._begin(conversation, tree, settings, [reply])

    async def on_switch(self, content: dict) -> None:
        self._not_busy()
        conversation = await self._conversation(content)
        tree = await self._tree(conversation)
        settings = parse_settings(content.get("settings"))
        index = self._column(content, settings)
        message = tree.get(content.get("message"))
        if message is None:
            raise Invalid("That message is not in this conversation.")
        leaf = tree.latest_leaf(message, index)
        settings.columns[index].leaf = leaf.pk
        await self._save(conversation, settings, tree)
        await self._send_column(tree, index, leaf.pk)

    async def on_show(self, content: dict) -> None:
        column = content.get("column")
        if not isinstance(column, int) or not 0 <= column < 3:
            raise Invalid("No such column.")
        if content.get("conversation") is None:
            await self._send_column(Tree([]), column, None)
            return
        conversation = await self._conversation(content)
        tree = await self._tree(conversation)
        leaf = self._leaf(tree, content.get("leaf"))
        await self._send_column(tree, column, leaf.pk if leaf else None)

    # --- replies -------------------------------------------------------------------------

    async def _reply_to(
        self,
        conversation: Conversation,
        tree: Tree,
        settings: Settings,
        index: int,
        question: Message,
    ) -> tuple[int, Message, dict]:
        """A placeholder for the reply to `question` in column `index`, and its request body."""
        column = settings.columns[index]
        params = settings.request_params(column)
        path = tree.path(question)
        body = params | {"messages": conversations.messages_for_request(path, settings.system)}
        answer = await Message.objects.acreate(
            conversation=conversation,
            parent=question,
            column=index,
            role=Role.ASSISTANT,
            status=Status.STREAMING,
            model=column.model,
            params=params | ({"system": settings.system} if settings.system else {}),
        )
        tree.add(answer)
        column.leaf = answer.pk
        return index, answer, body

    async def _begin(
        self,
        conversation: Conversation,
        tree: Tree,
        settings: Settings,
        replies: list[tuple[int, Message, dict]],
    ) -> None:
        """Save where each column is, show the threads, and start one task per reply."""
        await self._save(conversation, settings, tree)
        for index, answer, _body in replies:
            await self._send_column(tree, index, answer.pk)
        caller = as_member(workspace_id=self.workspace.pk, user_id=self.user.pk)
        for index, answer, body in replies:
            run = ChatRun(caller, body)
            self.streaming.add(answer.pk)
            task = asyncio.create_task(self._stream(conversation, tree, index, answer, run))
            self.runs[answer.pk] = task
            task.add_done_callback(lambda done, pk=answer.pk: self._forget(pk, done))

    def _forget(self, pk: int, task: asyncio.Task) -> None:
        if self.runs.get(pk) is task:
            del self.runs[pk]
        if not task.cancelled() and task.exception() is not None:
            logger.error("a playground reply failed", exc_info=task.exception())

    async def _stream(
        self, conversation: Conversation, tree: Tree, index: int, answer: Message, run: ChatRun
    ) -> None:
        changed = asyncio.Event()
        pacer = asyncio.create_task(self._pace(answer, run, changed))

        async def on_text() -> None:
            changed.set()

        try:
            await run.run(on_text)
        finally:
            pacer.cancel()
            await asyncio.gather(pacer, return_exceptions=True)
            await self._finish(conversation, tree, index, answer, run)

    async def _pace(self, answer: Message, run: ChatRun, changed: asyncio.Event) -> None:
        """Send the reply so far whenever it changed, at most every PACE seconds."""
        while True:
            await changed.wait()
            changed.clear()
            answer.content = run.text
            html = conversations.reply_html(answer)
            await self._send({"type": "delta", "id": answer.pk, "html": html, "tokens": run.chunks})
            await asyncio.sleep(PACE)

    async def _finish(
        self, conversation: Conversation, tree: Tree, index: int, answer: Message, run: ChatRun
    ) -> None:
        answer.content = run.text
        answer.status = run.status if run.status != Status.STREAMING else Status.STOPPED
        answer.request_id = run.request_id if run.call is not None else ""
        answer.tokens_in, answer.tokens_out = run.tokens_in, run.tokens_out
        answer.cost = run.cost
        answer.ttft_ms, answer.duration_ms = run.ttft_ms, run.duration_ms
        answer.finish_reason = run.finish_reason
        if run.error is not None:
            answer.error_status = run.error.status
            answer.error = _error_text(run.error)[:500]
        await answer.asave()
        await Conversation.objects.filter(pk=conversation.pk).aupdate(updated_at=timezone.now())
        totals = await conversations.atotals(conversation)
        turn = tree.turn(answer, index)
        # Saved and booked: the page may send the next message as soon as this one shows.
        self.streaming.discard(answer.pk)
        await self._send(
            {
                "type": "message",
                "id": answer.pk,
                "column": index,
                "html": self._render("message", {"turn": turn, "column": index}),
            }
        )
        await self._send({"type": "totals", "html": self._render("totals", {"totals": totals})})
        if not self.streaming:
            await self._send({"type": "idle"})

    async def _stop_all(self) -> None:
        runs = list(self.runs.values())
        for task in runs:
            task.cancel()
        if runs:
            await asyncio.gather(*runs, return_exceptions=True)

    # --- helpers -------------------------------------------------------------------------

    async def _may_still_use(self) -> None:
        """The role may have changed since the page opened: check it before each call."""
        if await self._membership() is None:
            await self._problem("You may no longer use the playground in this workspace.")
            self.open = False
            await self.close(code=sockets.NOT_ALLOWED)
            raise Invalid("You may no longer use the playground in this workspace.")

    def _not_busy(self) -> None:
        if self.streaming:
            raise Invalid("A reply is still streaming: wait for it or press Stop.")

    async def _conversation(self, content: dict) -> Conversation:
        pk = content.get("conversation")
        conversation = None
        if isinstance(pk, int):
            conversation = (
                await Conversation.objects.for_member(self.workspace, self.user)
                .filter(pk=pk)
                .afirst()
            )
        if conversation is None:
            raise Invalid("That conversation does not exist (or is not yours).")
        return conversation

    async def _tree(self, conversation: Conversation) -> Tree:
        return Tree([m async for m in Message.objects.filter(conversation=conversation)])

    def _leaf(self, tree: Tree, pk: Any) -> Message | None:
        if pk is None:
            return None
        leaf = tree.get(pk)
        if leaf is None:
            raise Invalid("That message is not in this conversation.")
        return leaf

    def _column(self, content: dict, settings: Settings) -> int:
        index = content.get("column", 0)
        if not isinstance(index, int) or not 0 <= index < len(settings.columns):
            raise Invalid("No such column.")
        return index

    async def _save(self, conversation: Conversation, settings: Settings, tree: Tree) -> None:
        for column in settings.columns:
            if column.leaf is not None and tree.get(column.leaf) is None:
                column.leaf = None
        conversation.settings = settings.model_dump()
        conversation.updated_at = timezone.now()
        await conversation.asave(update_fields=["settings", "updated_at"])

    async def _send_column(self, tree: Tree, index: int, leaf: int | None) -> None:
        turns = tree.turns(tree.get(leaf), index)
        html = self._render("column-thread", {"turns": turns, "column": index})
        await self._send({"type": "column", "column": index, "leaf": leaf, "html": html})

    def _render(self, partial: str, context: dict) -> str:
        context |= {"workspace": self.workspace, "can_manage_billing": self.can_manage_billing}
        return render_to_string(f"{TEMPLATE}#{partial}", context)

    async def _send(self, message: dict) -> None:
        if self.open:
            await self.send_json(message)

    async def _problem(self, message: str) -> None:
        await self._send({"type": "problem", "message": message})


def _error_text(error) -> str:
    return str(error.detail) if getattr(error, "detail", None) else str(error)
