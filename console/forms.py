"""Forms for the Keys page: what a person types, checked and turned into `create_key` arguments."""

import re
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.utils import timezone

from console.models import ADMIN_SCOPE, PRODUCT_SCOPES, SCOPE_CHOICES
from console.pricing import MICRO

_INT_MAX = 2**31 - 1  # what a PositiveIntegerField holds on every database

# A money amount as people type it: whole units, or up to six decimals (micro-units).
_AMOUNT = re.compile(r"^\d{1,12}(\.\d{1,6})?$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
_MAX_MODELS = 100

EXPIRY_CHOICES = [
    ("never", "Never"),
    ("7", "In 7 days"),
    ("30", "In 30 days"),
    ("90", "In 90 days"),
    ("date", "On a date…"),
]

GRACE_CHOICES = [
    ("0", "Immediately"),
    ("3600", "After 1 hour"),
    ("86400", "After 24 hours"),
    ("604800", "After 7 days"),
]


def parse_money(text: str) -> int:
    """Micro-units from an amount such as `25` or `2.50`; ValueError when it is not one."""
    text = text.strip().replace(" ", "")
    if not _AMOUNT.match(text):
        raise ValueError(text)
    return int(Decimal(text) * MICRO)


def _limit_field(label: str) -> forms.IntegerField:
    return forms.IntegerField(
        label=label,
        required=False,
        min_value=1,
        max_value=_INT_MAX,
        widget=forms.NumberInput(attrs={"placeholder": "No limit", "inputmode": "numeric"}),
        error_messages={
            "invalid": "Enter a whole number, or leave it empty for no limit.",
            "min_value": "Enter a number above zero, or leave it empty for no limit.",
            "max_value": "That is more than this console can count; leave it empty for no limit.",
        },
    )


class KeyForm(forms.Form):
    name = forms.CharField(
        max_length=128,
        widget=forms.TextInput(
            attrs={"placeholder": "e.g. Production backend", "autocomplete": "off"}
        ),
        error_messages={
            "required": "Give the key a name, so you know later where it is used.",
            "max_length": "Keep the name under %(limit_value)d characters.",
        },
    )
    scopes = forms.MultipleChoiceField(
        label="Products",
        widget=forms.CheckboxSelectMultiple,
        error_messages={
            "required": "Choose at least one product the key may call.",
            "invalid_choice": "“%(value)s” is not a product this key can be given.",
        },
    )
    allowed_models = forms.CharField(
        label="Allowed models",
        required=False,
        max_length=4000,
        widget=forms.TextInput(
            attrs={"placeholder": "All models", "autocomplete": "off", "spellcheck": "false"}
        ),
    )
    rpm_limit = _limit_field("Requests per minute")
    tpm_limit = _limit_field("Tokens per minute")
    monthly_budget = forms.CharField(
        label="Monthly budget",
        required=False,
        max_length=32,
        widget=forms.TextInput(attrs={"placeholder": "No budget", "inputmode": "decimal"}),
    )
    expiry = forms.ChoiceField(
        label="Expires",
        choices=EXPIRY_CHOICES,
        initial="never",
        required=False,
        error_messages={"invalid_choice": "Choose when the key expires."},
    )
    expires_on = forms.DateField(
        label="Expiry date",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Enter a date such as 2030-01-31."},
    )

    def __init__(self, *args: Any, allow_admin: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_admin = allow_admin
        self.fields["scopes"].choices = [
            (value, label) for value, label in SCOPE_CHOICES if allow_admin or value != ADMIN_SCOPE
        ]
        self.fields["scopes"].initial = list(PRODUCT_SCOPES)

    def clean_name(self) -> str:
        return " ".join(self.cleaned_data["name"].split())

    def clean_scopes(self) -> list[str]:
        chosen = set(self.cleaned_data["scopes"])
        return [value for value, _label in SCOPE_CHOICES if value in chosen]

    def clean_allowed_models(self) -> list[str]:
        names: list[str] = []
        for name in re.split(r"[\s,]+", self.cleaned_data["allowed_models"]):
            if not name or name in names:
                continue
            if not _MODEL_NAME.match(name):
                raise forms.ValidationError(f"“{name}” is not a model name.")
            names.append(name)
        if len(names) > _MAX_MODELS:
            raise forms.ValidationError(f"List at most {_MAX_MODELS} models.")
        return names

    def clean_monthly_budget(self) -> int | None:
        text = self.cleaned_data["monthly_budget"].strip()
        if not text:
            return None
        try:
            amount = parse_money(text)
        except ValueError:
            raise forms.ValidationError(
                "Enter an amount such as 25 or 2.50, or leave it empty for no budget."
            ) from None
        if amount <= 0:
            raise forms.ValidationError(
                "Enter an amount above zero, or leave it empty for no budget."
            )
        return amount

    def clean_expiry(self) -> str:
        return self.cleaned_data["expiry"] or "never"

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("expiry") == "date":
            day = data.get("expires_on")
            if day is None and "expires_on" not in self.errors:
                self.add_error("expires_on", "Choose the date on which the key stops working.")
            elif day is not None and day <= timezone.localdate():
                self.add_error("expires_on", "Choose a date after today.")
        return data

    def expires_at(self) -> datetime | None:
        """When the key stops working: a number of days from now, or the start of the date."""
        expiry = self.cleaned_data["expiry"]
        if expiry == "never":
            return None
        if expiry == "date":
            day = self.cleaned_data["expires_on"]
            return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())
        return timezone.now() + timedelta(days=int(expiry))

    def key_settings(self) -> dict[str, Any]:
        """The keyword arguments that `create_key` takes, from a valid form."""
        data = self.cleaned_data
        return {
            "name": data["name"],
            "scopes": data["scopes"],
            "allowed_models": data["allowed_models"],
            "rpm_limit": data["rpm_limit"],
            "tpm_limit": data["tpm_limit"],
            "monthly_budget": data["monthly_budget"],
            "expires_at": self.expires_at(),
        }


class RotateForm(forms.Form):
    grace = forms.TypedChoiceField(
        choices=GRACE_CHOICES,
        coerce=int,
        initial="86400",
        error_messages={
            "required": "Choose how long the old secret keeps working.",
            "invalid_choice": "Choose how long the old secret keeps working.",
        },
    )

    def grace_period(self) -> timedelta:
        return timedelta(seconds=self.cleaned_data["grace"])
