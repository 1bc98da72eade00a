"""API keys, usage records and the audit log."""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q, Sum
from django.db.models.signals import post_delete
from django.dispatch import receiver
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
    UPLOADS = "uploads", "Uploads"
    FETCH = "fetch", "Web fetch"


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

    def live(self) -> "ApiKeyQuerySet":
        """Keys that work or could work again: neither revoked nor expired (a disabled key
        can be enabled)."""
        return self.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
        )

    def info_for_hash(self, key_hash: str) -> keys.KeyInfo | None:
        key = self.select_related("workspace").filter(key_hash=key_hash).first()
        return key.info() if key else None


class ApiKey(models.Model):
    """A key that programs use to call /v1; the secret itself is never stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The key that created this one through the account API; it never has more than that key.
    created_by_key = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
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
        keys.forget_after_commit(self.key_hash)

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


@receiver(post_delete, sender=ApiKey)
def _forget_deleted_key(sender, instance: ApiKey, **kwargs) -> None:
    keys.forget_after_commit(instance.key_hash)


class Source(models.TextChoices):
    API = "api", "API"
    PLAYGROUND = "playground", "Playground"


class UsageRecordQuerySet(models.QuerySet["UsageRecord"]):
    def for_workspace(self, workspace: Workspace) -> "UsageRecordQuerySet":
        return self.filter(workspace=workspace)


class UsageRecord(models.Model):
    """One model call, whatever became of it: the books are built from these."""

    request_id = models.CharField(max_length=64, unique=True)
    # Both keys lead an index of their own with created_at (Meta): no single-column ones,
    # which every booking would have to write too.
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="usage_records", db_index=False
    )
    api_key = models.ForeignKey(
        ApiKey,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="usage",
        db_index=False,
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    product = models.CharField(max_length=16, choices=Product.choices)
    endpoint = models.CharField(max_length=64)
    model = models.CharField(max_length=128, blank=True)
    # The name the caller asked for, when an alias served it as `model` (blank otherwise).
    model_asked = models.CharField(max_length=128, blank=True, default="", db_default="")
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


class ModelAliasQuerySet(models.QuerySet["ModelAlias"]):
    def for_workspace(self, workspace: Workspace) -> "ModelAliasQuerySet":
        return self.filter(workspace=workspace)


class ModelAlias(models.Model):
    """A model name clients ask for (exact, `provider/model`, or a glob with `*` and `?`)
    and the model of the fleet that serves it, in one workspace (console.aliases)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    pattern = models.CharField(max_length=128)
    target = models.CharField(max_length=128)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ModelAliasQuerySet.as_manager()

    class Meta:
        ordering = ["pattern"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "pattern"], name="one_alias_per_pattern")
        ]

    def __str__(self) -> str:
        return f"{self.pattern} -> {self.target}"


# ---------- billing ----------


class Unit(models.TextChoices):
    """What a price is per; `per` says how many of the unit the amount buys."""

    INPUT_TOKEN = "input_token", "Input tokens"
    OUTPUT_TOKEN = "output_token", "Output tokens"
    EMBEDDING_TOKEN = "embedding_token", "Embedding tokens"
    IMAGE = "image", "Images"
    SPEECH_CHARACTER = "speech_character", "Speech characters"
    TRANSCRIPTION_SECOND = "transcription_second", "Transcription seconds"
    REALTIME_MINUTE = "realtime_minute", "Realtime minutes"
    MUSIC_SECOND = "music_second", "Music seconds"
    VIDEO_SECOND = "video_second", "Video seconds"
    PAGE = "page", "Fetched pages"


class PriceQuerySet(models.QuerySet["Price"]):
    def in_force(self, at=None) -> "PriceQuerySet":
        """The prices that apply at a moment: the newest version of each (product, model, unit, variant)."""
        at = at or timezone.now()
        newer = Price.objects.filter(
            product=models.OuterRef("product"),
            model=models.OuterRef("model"),
            unit=models.OuterRef("unit"),
            variant=models.OuterRef("variant"),
            valid_from__lte=at,
            valid_from__gt=models.OuterRef("valid_from"),
        )
        return self.filter(valid_from__lte=at).exclude(models.Exists(newer))


class Price(models.Model):
    """What one unit costs, in micro-units per `per` units. Rows are never edited: a new
    price is a new row with a later `valid_from`, so past charges keep their price."""

    product = models.CharField(max_length=16, choices=Product.choices)
    model = models.CharField(
        max_length=128, blank=True, help_text="blank: every model of the product"
    )
    unit = models.CharField(max_length=24, choices=Unit.choices)
    variant = models.CharField(
        max_length=32, blank=True, help_text="e.g. an image size and quality"
    )
    amount = models.BigIntegerField(help_text="micro-units per `per` units")
    per = models.PositiveIntegerField(default=1)
    valid_from = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = PriceQuerySet.as_manager()

    class Meta:
        ordering = ["product", "model", "unit", "variant", "-valid_from"]
        indexes = [models.Index(fields=["product", "model", "unit", "variant", "-valid_from"])]

    def __str__(self) -> str:
        what = self.model or f"any {self.product}"
        return f"{what} {self.unit}{' ' + self.variant if self.variant else ''}: {self.amount}/{self.per}"

    def cost(self, quantity: int) -> int:
        """Micro-units for a whole quantity, rounded up so that nothing is given away."""
        if quantity <= 0:
            return 0
        return -(-quantity * self.amount // self.per)


class BillingAccount(models.Model):
    """A workspace's money: the balance (always the sum of its ledger) and its limits."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="billing")
    balance = models.BigIntegerField(default=0, help_text="micro-units")
    monthly_limit = models.BigIntegerField(null=True, blank=True, help_text="micro-units per month")
    alert_thresholds = models.JSONField(
        default=list, blank=True, help_text="percent of the monthly limit"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="balance_never_negative")
        ]

    def __str__(self) -> str:
        return f"{self.workspace}: {self.balance}"


class EntryKind(models.TextChoices):
    GRANT = "grant", "Credit added"
    HOLD = "hold", "Hold"
    RELEASE = "release", "Hold released"
    CHARGE = "charge", "Charge"
    REFUND = "refund", "Refund"


class LedgerEntry(models.Model):
    """One movement of a workspace's balance; append-only.

    The database holds to that too (triggers, migration 0007): it refuses to change an
    entry, except to clear the author of one whose author is deleted, and to delete an
    entry except with its workspace (`console.purge`). A migration that remakes this
    table on SQLite drops the triggers with it, and must create them again.
    """

    # Leads the (workspace, created_at, id) index in Meta.
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="ledger", db_index=False
    )
    kind = models.CharField(max_length=8, choices=EntryKind.choices)
    amount = models.BigIntegerField(help_text="signed micro-units")
    balance_after = models.BigIntegerField()
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    note = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["workspace", "-created_at", "-id"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} ({self.request_id or self.note})"


class Hold(models.Model):
    """An open hold: money set aside for a call in flight, until the call is settled."""

    request_id = models.CharField(max_length=64, unique=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="holds")
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    amount = models.BigIntegerField()
    month = models.CharField(max_length=7)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The worker (console.workers) whose call or lease this is: released when it is gone.
    owner = models.CharField(max_length=64, blank=True, db_index=True)

    def __str__(self) -> str:
        return f"hold {self.amount} for {self.request_id}"


class Worker(models.Model):
    """A console process that holds credit or books calls, seen every few seconds while it
    lives: what a worker that is gone held can then be returned by the others."""

    id = models.CharField(max_length=64, primary_key=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.id


class MonthlySpend(models.Model):
    """What a workspace or a key has committed this month (charges plus open holds), so that a
    budget can be checked and reserved against in one conditional update."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    month = models.CharField(max_length=7)
    committed = models.BigIntegerField(default=0)
    spent = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "api_key", "month"], name="one_spend_row_per_month"
            ),
            models.UniqueConstraint(
                fields=["workspace", "month"],
                condition=Q(api_key__isnull=True),
                name="one_workspace_spend_row",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.month}: {self.spent} spent, {self.committed} committed"


class AlertSent(models.Model):
    """A budget alert already sent, so each threshold is announced once per month."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="alerts")
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    month = models.CharField(max_length=7)
    threshold = models.PositiveSmallIntegerField()
    spent = models.BigIntegerField()
    limit = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "api_key", "month", "threshold"],
                name="one_alert_per_threshold",
            ),
            models.UniqueConstraint(
                fields=["workspace", "month", "threshold"],
                condition=Q(api_key__isnull=True),
                name="one_workspace_alert_per_threshold",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.threshold}% of {self.limit} in {self.month}"


class UsageRollup(models.Model):
    """Usage per day and dimension, kept current as calls settle, for the dashboards."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model = models.CharField(max_length=128, blank=True)
    model_asked = models.CharField(max_length=128, blank=True, default="", db_default="")
    product = models.CharField(max_length=16, choices=Product.choices)
    source = models.CharField(max_length=16, choices=Source.choices)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    cost = models.BigIntegerField(default=0)
    latency_ms_total = models.BigIntegerField(default=0)
    # The dimensions in one string, so that uniqueness holds where key or user is empty.
    dimensions = models.CharField(max_length=255)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "day", "dimensions"], name="one_rollup_row"
            )
        ]
        indexes = [models.Index(fields=["workspace", "day"])]

    def __str__(self) -> str:
        return f"{self.day} {self.dimensions}: {self.requests} requests"
