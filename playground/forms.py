import json

from django import forms

from playground.params import Invalid, Settings, parse_settings

# What a preset keeps: the prompt and the parameters, not the conversation.
PRESET_FIELDS = ("system", "stop", "response_format", "json_schema")
PRESET_COLUMN_FIELDS = ("model", "temperature", "top_p", "max_tokens")


class PresetForm(forms.Form):
    name = forms.CharField(
        max_length=80,
        error_messages={"required": "Give the preset a name."},
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "e.g. Code reviewer"}),
    )
    shared = forms.BooleanField(required=False, label="Share with the workspace")
    settings = forms.CharField(widget=forms.HiddenInput)

    def clean_name(self) -> str:
        return " ".join(self.cleaned_data["name"].split())

    def clean_settings(self) -> dict:
        try:
            data = json.loads(self.cleaned_data["settings"])
            settings = parse_settings(data)
        except ValueError as exc:
            message = str(exc) if isinstance(exc, Invalid) else "The settings could not be read."
            raise forms.ValidationError(message) from None
        return preset_settings(settings)


def preset_settings(settings: Settings) -> dict:
    """The prompt and parameters of the column being edited, as a preset stores them."""
    column = settings.columns[settings.active]
    data = settings.model_dump(include=set(PRESET_FIELDS))
    data |= column.model_dump(include=set(PRESET_COLUMN_FIELDS))
    return data
