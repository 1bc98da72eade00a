from django.contrib import admin
from django.utils import timezone

from console import balances
from console.models import ApiKey, AuditEvent, BillingAccount, LedgerEntry, Price, UsageRecord
from console.pricing import forget_prices, format_money


class ReadOnlyAdmin(admin.ModelAdmin):
    """Books are written by the console only: the admin shows them."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    """Editing a price adds a new version from now on; charges made before keep their price."""

    list_display = ["product", "model", "unit", "variant", "amount", "per", "valid_from"]
    list_filter = ["product", "unit"]
    search_fields = ["model"]
    exclude = ["created_by"]

    def save_model(self, request, obj, form, change) -> None:
        if change:
            obj.pk = None
            obj._state.adding = True
            obj.valid_from = timezone.now()
        obj.created_by = request.user
        super().save_model(request, obj, form, change)
        forget_prices()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "prefix",
        "last_four",
        "workspace",
        "created_by",
        "created_at",
        "last_used_at",
    ]
    search_fields = ["name", "prefix", "workspace__slug"]
    exclude = ["key_hash"]


@admin.register(BillingAccount)
class BillingAccountAdmin(ReadOnlyAdmin):
    list_display = ["workspace", "left", "held_for_calls", "monthly_limit"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(held=balances.open_holds())

    @admin.display(description="balance (left after charges)")
    def left(self, account: BillingAccount) -> str:
        return format_money(account.balance + account.held, precise=True)

    @admin.display(description="held for calls in progress")
    def held_for_calls(self, account: BillingAccount) -> str:
        return format_money(account.held, precise=True)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "workspace",
        "kind",
        "amount",
        "balance_after",
        "request_id",
        "note",
    ]
    list_filter = ["kind"]
    search_fields = ["request_id", "workspace__slug", "note"]


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "workspace",
        "endpoint",
        "model",
        "status",
        "tokens_in",
        "tokens_out",
        "cost",
    ]
    list_filter = ["product", "source", "status"]
    search_fields = ["request_id", "workspace__slug", "model"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "workspace", "actor", "action", "api_key"]
    list_filter = ["action"]
