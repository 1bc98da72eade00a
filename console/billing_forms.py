"""Forms for the Billing page: adding credit, and the workspace's monthly limit and alerts."""

from decimal import Decimal, InvalidOperation

from django import forms
from django.db import transaction

from accounts.models import User
from console.actions import audit
from console.management.commands.grantcredit import parse_amount
from console.models import BillingAccount
from console.pricing import MICRO, format_money

# One grant, or a monthly limit, of at most this many currency units: a typo such as a
# pasted card number should not become a balance.
MAX_AMOUNT = 1_000_000 * MICRO
MAX_THRESHOLDS = 10


def amount_in_micro(text: str) -> int:
    """Currency units as typed (`25`, `12.50`) to micro-units, or ValueError saying why not."""
    text = text.strip()
    too_much = f"the most you can enter here is {format_money(MAX_AMOUNT)}"
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = None  # not a number at all: parse_amount says so in its own words
    if value is not None:
        if not value.is_finite():
            raise ValueError(f"{text!r} is not an amount; write it like 5 or 0.25")
        # Refuse `1e999999` before parse_amount multiplies it past what Decimal can hold.
        if value.adjusted() > len(str(MAX_AMOUNT // MICRO)):
            raise ValueError(too_much)
    micro = parse_amount(text)
    if micro > MAX_AMOUNT:
        raise ValueError(too_much)
    return micro


def units_text(micro: int) -> str:
    """Micro-units as the plain number a person would type back: `12.5`, `100`."""
    whole, fraction = divmod(micro, MICRO)
    return f"{whole}.{fraction:06d}".rstrip("0").rstrip(".")


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + "."


class AmountField(forms.CharField):
    """An amount of money typed in currency units, cleaned to integer micro-units."""

    max_chars = 32  # checked by hand: CharField's max_length validator would measure the int

    def widget_attrs(self, widget: forms.Widget) -> dict:
        attrs = {"inputmode": "decimal", "autocomplete": "off", "maxlength": str(self.max_chars)}
        return super().widget_attrs(widget) | attrs

    def prepare_value(self, value):
        return units_text(value) if isinstance(value, int) else value

    def to_python(self, value) -> int | None:
        text = super().to_python(value)
        if text in self.empty_values:
            return None
        if len(text) > self.max_chars:
            raise forms.ValidationError("That is not an amount; write it like 25 or 12.50.")
        try:
            return amount_in_micro(text)
        except ValueError as exc:
            raise forms.ValidationError(_sentence(str(exc)), code="invalid") from None


class ThresholdsField(forms.CharField):
    """Alert thresholds as `50, 80, 100`: whole percentages from 1 to 100, cleaned to a sorted list."""

    max_chars = 100

    def widget_attrs(self, widget: forms.Widget) -> dict:
        return super().widget_attrs(widget) | {
            "autocomplete": "off",
            "maxlength": str(self.max_chars),
        }

    def prepare_value(self, value):
        return ", ".join(str(v) for v in value) if isinstance(value, list) else value

    def to_python(self, value) -> list[int]:
        text = super().to_python(value)
        if len(text) > self.max_chars:
            raise forms.ValidationError("That is too long for a list of percentages.")
        percents: set[int] = set()
        for part in text.replace(";", ",").split(","):
            part = part.strip().removesuffix("%").strip()
            if not part:
                continue
            if not part.isascii() or not part.isdigit():
                raise forms.ValidationError(
                    f"“{part}” is not a whole percentage; write them like 50, 80, 100.",
                    code="invalid",
                )
            if not 1 <= int(part) <= 100:
                raise forms.ValidationError(
                    f"Each percentage is from 1 to 100; {int(part)} is not.", code="range"
                )
            percents.add(int(part))
        if len(percents) > MAX_THRESHOLDS:
            raise forms.ValidationError(
                f"Choose at most {MAX_THRESHOLDS} percentages.", code="too_many"
            )
        return sorted(percents)


class CreditForm(forms.Form):
    amount = AmountField(
        error_messages={"required": "Enter how much credit to add, e.g. 25 or 12.50."},
        widget=forms.TextInput(attrs={"placeholder": "25.00"}),
    )
    note = forms.CharField(
        max_length=255,
        error_messages={
            "required": "Say why the credit is added; the note stays in the ledger.",
            "max_length": "Keep the note under %(limit_value)d characters.",
        },
        widget=forms.TextInput(attrs={"placeholder": "e.g. Invoice 2026-014"}),
    )


class BudgetForm(forms.ModelForm):
    monthly_limit = AmountField(
        required=False,
        label="Monthly spend limit",
        widget=forms.TextInput(attrs={"placeholder": "No limit"}),
    )
    alert_thresholds = ThresholdsField(
        required=False,
        label="Alert at",
        widget=forms.TextInput(attrs={"placeholder": "50, 80, 100"}),
    )

    class Meta:
        model = BillingAccount
        fields = ["monthly_limit", "alert_thresholds"]

    def __init__(self, data=None, *args, **kwargs) -> None:
        # The "Remove limit" button submits the form with clear_limit set.
        if data is not None and data.get("clear_limit"):
            data = data.copy()
            data["monthly_limit"] = ""
        super().__init__(data, *args, **kwargs)

    @transaction.atomic
    def save_by(self, user: User) -> BillingAccount:
        """Save the limit and thresholds, writing each change to the audit log."""
        account = self.instance
        before = BillingAccount.objects.select_for_update().get(pk=account.pk)
        # Only these two columns: the balance on this instance may be stale by now.
        account.save(update_fields=self.Meta.fields)
        workspace = account.workspace
        for field, action in (
            ("monthly_limit", "billing.limit_changed"),
            ("alert_thresholds", "billing.thresholds_changed"),
        ):
            old, new = getattr(before, field), getattr(account, field)
            if old != new:
                audit(workspace=workspace, actor=user, action=action, old=old, new=new)
        return account
