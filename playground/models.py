"""Saved conversations (a tree of messages, so that regenerating and editing keep every branch)
and saved prompts (presets) that a member may share with the workspace."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Workspace


class ConversationQuerySet(models.QuerySet["Conversation"]):
    def for_member(self, workspace: Workspace, user) -> "ConversationQuerySet":
        """A member's own conversations in a workspace: nobody else's, not even an owner's."""
        return self.filter(workspace=workspace, user=user)


class Conversation(models.Model):
    """One playground conversation of one member.

    `settings` holds what the page needs to reopen it where it was: the system prompt
    and shared parameters, and one entry per column (model, its parameters, and the
    message the column shows last, its `leaf`).
    """

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="playground_conversations"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="playground_conversations"
    )
    title = models.CharField(max_length=120, blank=True)
    settings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at", "-pk"]
        indexes = [models.Index(fields=["workspace", "user", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Role(models.TextChoices):
    USER = "user", "User"
    ASSISTANT = "assistant", "Assistant"


class Status(models.TextChoices):
    DONE = "done", "Done"
    STREAMING = "streaming", "Streaming"
    STOPPED = "stopped", "Stopped"
    ERROR = "error", "Error"
    WRITTEN = "written", "Written by the member"


# What a failed call's status means to the member, in a few words.
ERROR_TITLES = {
    400: "The model rejected the request",
    403: "Not allowed",
    404: "Model not found",
    413: "The request is too large",
    422: "The model rejected the request",
    402: "Not enough credit",
    429: "Rate limited",
    502: "The upstream failed",
    503: "The upstream is unavailable",
    504: "The upstream timed out",
}


class Message(models.Model):
    """A user or assistant message; siblings (same parent and column) are alternative branches.

    An assistant message that came from a model call carries the call's metrics and
    request id; `params` are the exact parameters it was sent with (the messages are
    its ancestors), so the request can be shown again as code.
    """

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    column = models.PositiveSmallIntegerField(default=0)
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    images = models.JSONField(default=list, blank=True, help_text="data: URIs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DONE)
    model = models.CharField(max_length=128, blank=True)
    params = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost = models.BigIntegerField(default=0, help_text="micro-units")
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    error_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.role} {self.pk} in {self.conversation_id}"

    @property
    def is_call(self) -> bool:
        return bool(self.request_id)

    @property
    def error_title(self) -> str:
        return ERROR_TITLES.get(self.error_status or 0, "The call failed")

    @property
    def tokens_per_second(self) -> float | None:
        """Output speed: tokens written per second after the first one arrived."""
        if not self.tokens_out or self.duration_ms is None:
            return None
        writing_ms = self.duration_ms - (self.ttft_ms or 0)
        if writing_ms <= 0:
            return None
        return self.tokens_out * 1000 / writing_ms


class PresetQuerySet(models.QuerySet["Preset"]):
    def visible_to(self, workspace: Workspace, user) -> "PresetQuerySet":
        """The member's own presets in the workspace and those others shared with it."""
        return self.filter(workspace=workspace).filter(Q(owner=user) | Q(shared=True))


class Preset(models.Model):
    """A saved prompt: system prompt, model and parameters. Only its owner changes it."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="playground_presets"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="playground_presets"
    )
    name = models.CharField(max_length=80)
    settings = models.JSONField(default=dict, blank=True)
    shared = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = PresetQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "owner", "name"], name="playground_preset_unique_name"
            )
        ]

    def __str__(self) -> str:
        return self.name


class ImageRunQuerySet(models.QuerySet["ImageRun"]):
    def for_member(self, workspace: Workspace, user) -> "ImageRunQuerySet":
        """A member's own image runs in a workspace: nobody else's, not even an owner's."""
        return self.filter(workspace=workspace, user=user)


class ImageRun(models.Model):
    """One image generation from the Images page.

    `request` is the exact body the call was sent with (references as file ids), so the
    run reopens into the form and shows again as code; `results` keeps what came back
    as stored files (`file_id`, `revised_prompt`): their links expire, and the page
    signs fresh ones each time it shows them.
    """

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="playground_image_runs"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="playground_image_runs"
    )
    request = models.JSONField(default=dict)
    results = models.JSONField(default=list, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    cost = models.BigIntegerField(default=0, help_text="micro-units")
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ImageRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["workspace", "user", "-created_at"])]

    def __str__(self) -> str:
        return f"Image run {self.pk}"

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt", ""))

    @property
    def file_ids(self) -> list[str]:
        return [r["file_id"] for r in self.results if r.get("file_id")]


class VoiceRunQuerySet(models.QuerySet["VoiceRun"]):
    def for_member(self, workspace: Workspace, user) -> "VoiceRunQuerySet":
        """A member's own voice runs in a workspace: nobody else's, not even an owner's."""
        return self.filter(workspace=workspace, user=user)


class VoiceRun(models.Model):
    """One call of the Voice page: a speech, or a transcription.

    A speech keeps the exact body it was sent with and the file its audio was kept as
    (the page signs a fresh link each time it shows it); two speeches of one comparison
    share a `group`. A transcription keeps its form's fields and the answer (`text`,
    `language`, `duration`). A run is written only once its call succeeded.
    """

    class Kind(models.TextChoices):
        SPEECH = "speech", "Speech"
        TRANSCRIPTION = "transcription", "Transcription"

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="playground_voice_runs"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="playground_voice_runs"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    group = models.CharField(max_length=64, blank=True, help_text="the comparison it is part of")
    request = models.JSONField(default=dict)
    result = models.JSONField(default=dict, blank=True)
    file_id = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=64, unique=True)
    cost = models.BigIntegerField(default=0, help_text="micro-units")
    duration_ms = models.PositiveIntegerField(default=0)
    first_byte_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = VoiceRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["workspace", "user", "-created_at"])]

    def __str__(self) -> str:
        return f"Voice run {self.pk}"

    @property
    def text(self) -> str:
        """What was spoken, or what was heard."""
        if self.kind == self.Kind.SPEECH:
            return str(self.request.get("input", ""))
        return str(self.result.get("text", ""))


class EmbeddingRunQuerySet(models.QuerySet["EmbeddingRun"]):
    def for_member(self, workspace: Workspace, user) -> "EmbeddingRunQuerySet":
        """A member's own embedding runs in a workspace: nobody else's, not even an owner's."""
        return self.filter(workspace=workspace, user=user)


class EmbeddingRun(models.Model):
    """One call of the Embeddings page: the exact body it was sent with and the vectors that
    came back (in the order of the inputs), so that it reopens with its heat map and its
    vectors can be downloaded again."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="playground_embedding_runs"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="playground_embedding_runs"
    )
    request = models.JSONField(default=dict)
    vectors = models.JSONField(default=list, blank=True)
    tokens = models.PositiveIntegerField(default=0)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    cost = models.BigIntegerField(default=0, help_text="micro-units")
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    objects = EmbeddingRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["workspace", "user", "-created_at"])]

    def __str__(self) -> str:
        return f"Embedding run {self.pk}"

    @property
    def inputs(self) -> list[str]:
        value = self.request.get("input", [])
        return [value] if isinstance(value, str) else list(value)


class ResponseRunQuerySet(models.QuerySet["ResponseRun"]):
    def for_member(self, workspace: Workspace, user) -> "ResponseRunQuerySet":
        """A member's own response runs in a workspace: nobody else's, not even an owner's."""
        return self.filter(workspace=workspace, user=user)


class ResponseRun(models.Model):
    """One call of the Responses page: the exact body sent to `/v1/responses` and the
    response object that came back (for a streamed one, the response of its last event,
    and every event as it came), with what the call cost."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="playground_response_runs"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="playground_response_runs"
    )
    request = models.JSONField(default=dict)
    response = models.JSONField(default=dict, blank=True)
    events = models.JSONField(default=list, blank=True, help_text="a streamed response's events")
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost = models.BigIntegerField(default=0, help_text="micro-units")
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ResponseRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["workspace", "user", "-created_at"])]

    def __str__(self) -> str:
        return f"Response run {self.pk}"

    @property
    def prompt(self) -> str:
        value = self.request.get("input", "")
        return value if isinstance(value, str) else ""


class FetchRunQuerySet(models.QuerySet["FetchRun"]):
    def for_member(self, workspace: Workspace, user) -> "FetchRunQuerySet":
        """A member's own fetches in a workspace: nobody else's, not even an owner's."""
        return self.filter(workspace=workspace, user=user)


class FetchRun(models.Model):
    """One fetch of the Fetch page: the exact body sent to `/v1/fetch` and the page that came
    back (its title, final URL, content type and content), so that it reopens as it was."""

    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="playground_fetch_runs"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="playground_fetch_runs"
    )
    request = models.JSONField(default=dict)
    result = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    cost = models.BigIntegerField(default=0, help_text="micro-units")
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    objects = FetchRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["workspace", "user", "-created_at"])]

    def __str__(self) -> str:
        return f"Fetch run {self.pk}"

    @property
    def url(self) -> str:
        return str(self.request.get("url", ""))

    @property
    def title(self) -> str:
        return str(self.result.get("title") or "")
