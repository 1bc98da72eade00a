"""What the gateway keeps: the media files of each workspace (uploads and results)."""

import secrets

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
