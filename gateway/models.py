"""What the gateway keeps: the media files of each workspace (uploads and results)."""

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Workspace


def new_file_id() -> str:
    return "file_" + secrets.token_hex(12)


class Purpose(models.TextChoices):
    UPLOAD = "upload", "Upload"
    IMAGE = "image", "Generated image"
    AUDIO = "audio", "Generated audio"
    VIDEO = "video", "Generated video"


class StoredFileQuerySet(models.QuerySet["StoredFile"]):
    def for_workspace(self, workspace_id: int) -> "StoredFileQuerySet":
        return self.filter(workspace_id=workspace_id)


class StoredFile(models.Model):
    """A file the console keeps for a workspace, in the media storage (`storage_name`):
    an upload, or a copy of a result whose upstream link expires."""

    id = models.CharField(primary_key=True, max_length=40, default=new_file_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="files")
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField()
    storage_name = models.CharField(max_length=255)
    request_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = StoredFileQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.id} ({self.content_type}, {self.size} bytes)"


def new_job_id(kind: str) -> str:
    return f"{kind}_job_" + secrets.token_hex(12)


class JobKind(models.TextChoices):
    MUSIC = "music", "Music"
    VIDEO = "video", "Video"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobQuerySet(models.QuerySet["Job"]):
    def for_workspace(self, workspace_id: int) -> "JobQuerySet":
        return self.filter(workspace_id=workspace_id)

    def unsettled(self) -> "JobQuerySet":
        return self.filter(settled_at__isnull=True)


class Job(models.Model):
    """A music or video job: the console's own id for a job an upstream node runs.

    It remembers whose it is (workspace, key or member), which node runs it under which
    id, and what was held for it (`request_id` names the hold, the ledger entries and the
    usage record). A runner claims it for a while (`claimed_by`, `claimed_until`) to poll
    it; it is settled once, when `settled_at` is set (gateway.job_runner).
    """

    id = models.CharField(primary_key=True, max_length=48, editable=False)
    kind = models.CharField(max_length=8, choices=JobKind.choices)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="jobs")
    api_key = models.ForeignKey(
        "console.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    source = models.CharField(max_length=16, default="api")
    request_id = models.CharField(max_length=64, unique=True)
    endpoint = models.CharField(max_length=64)
    model = models.CharField(max_length=128, blank=True)
    params = models.JSONField(default=dict)
    seconds = models.PositiveIntegerField()  # asked for: the worst case held
    held = models.BigIntegerField(default=0)
    hold_month = models.CharField(max_length=7, blank=True)
    node = models.CharField(max_length=64, blank=True)
    upstream_id = models.CharField(max_length=128, blank=True)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    file = models.ForeignKey(
        StoredFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    error = models.CharField(max_length=255, blank=True)
    cost = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    polls = models.PositiveIntegerField(default=0)
    next_poll_at = models.DateTimeField(default=timezone.now)
    unreachable_since = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=64, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["next_poll_at"],
                condition=models.Q(settled_at__isnull=True),
                name="gateway_job_unsettled",
            )
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED
