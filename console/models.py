"""API keys, usage records and the audit log."""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q, Sum
from django.utils import timezone

from accounts.models import Workspace
from console import keys


class Product(models.TextChoices):
    """What a call is for; also the scopes a key can be given."""

    CHAT = "chat", "Chat"
    RESPONSES = "responses", "Responses"
    EMBEDDINGS = "embeddings", "Embeddings"
    IMAGES = "images", "Images"
    AUDIO = "audio", "Speech and transcription"
    REALTIME = "realtime", "Realtime voice"
    MUSIC = "music", "Music"
    VIDEO = "video", "Video"
    VISION = "vision", "Vision"


ADMIN_SCOPE = "admin"
PRODUCT_SCOPES = tuple(Product.values)
SCOPE_CHOICES = [*Product.choices, (ADMIN_SCOPE, "Account API (keys, billing, usage)")]


def _default_scopes() -> list[str]:
    return list(PRODUCT_SCOPES)


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def for_workspace(self, workspace: Workspace) -> "ApiKeyQuerySet":
        return self.filter(workspace=workspace)

    def active(self) -> "ApiKeyQuerySet":
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, disabled_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )

    async def info_for_hash(self, key_hash: str) -> keys.KeyInfo | None:
        key = await self.select_related("workspace").filter(key_hash=key_hash).afirst()
        return key.info() if key else None


class ApiKey(models.Model):
    """A key that programs use to call /v1; the secret itself is never stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    name = models.CharField(max_length=128)
    prefix = models.CharField(max_length=16)
    last_four = models.CharField(max_length=4)
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=_default_scopes)
    allowed_models = models.JSONField(default=list, blank=True)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    monthly_budget = models.BigIntegerField(null=True, blank=True, help_text="micro-units")
    expires_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["workspace", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…{self.last_four})"

    def save(self, *args, **kwargs) -> None:
        super().save(*args, **kwargs)
        keys.forget(self.key_hash)

    @property
    def masked(self) -> str:
        return f"{self.prefix}…{self.last_four}"

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        if self.disabled_at:
            return "disabled"
        return "active"

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    def info(self) -> keys.KeyInfo:
        return keys.KeyInfo(
            id=str(self.id),
            workspace_id=self.workspace_id,
            workspace_slug=self.workspace.slug,
            user_id=self.created_by_id,
            name=self.name,
            scopes=tuple(self.scopes),
            models=tuple(self.allowed_models),
            rpm_limit=self.rpm_limit,
            tpm_limit=self.tpm_limit,
            monthly_budget=self.monthly_budget,
            expires_at=self.expires_at,
            active=self.revoked_at is None and self.disabled_at is None,
        )

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])

    def disable(self) -> None:
        self.disabled_at = timezone.now()
        self.save(update_fields=["disabled_at"])

    def enable(self) -> None:
        self.disabled_at = None
        self.save(update_fields=["disabled_at"])

    def expire_in(self, delta: timedelta) -> None:
        deadline = timezone.now() + delta
        if self.expires_at is None or self.expires_at > deadline:
            self.expires_at = deadline
            self.save(update_fields=["expires_at"])

    def spend_this_month(self) -> int:
        start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return (
            UsageRecord.objects.filter(api_key=self, created_at__gte=start).aggregate(
                s=Sum("cost")
            )["s"]
            or 0
        )


class Source(models.TextChoices):
    API = "api", "API"
    PLAYGROUND = "playground", "Playground"


class UsageRecordQuerySet(models.QuerySet["UsageRecord"]):
    def for_workspace(self, workspace: Workspace) -> "UsageRecordQuerySet":
        return self.filter(workspace=workspace)


class UsageRecord(models.Model):
    """One model call, whatever became of it: the books are built from these."""

    request_id = models.CharField(max_length=64, unique=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="usage_records")
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    product = models.CharField(max_length=16, choices=Product.choices)
    endpoint = models.CharField(max_length=64)
    model = models.CharField(max_length=128, blank=True)
    node = models.CharField(max_length=64, blank=True)
    status = models.PositiveSmallIntegerField()
    stream = models.BooleanField(default=False)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    units = models.JSONField(default=dict, blank=True)
    cost = models.BigIntegerField(default=0, help_text="micro-units")
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["workspace", "-created_at"]),
            models.Index(fields=["api_key", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.endpoint} {self.status}"


class AuditEvent(models.Model):
    """Who did what to a workspace's keys (and, later, its money)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    action = models.CharField(max_length=32)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor} at {self.created_at:%Y-%m-%d %H:%M}"
