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


IMAGE_SIZES = ["1024x1024", "1024x1536", "1536x1024"]
IMAGE_QUALITIES = ["auto", "low", "medium", "high"]
MAX_REFERENCES = 4


class ImageForm(forms.Form):
    """The Images page's form; the reference images come beside it, as signed file ids."""

    prompt = forms.CharField(
        max_length=4000,
        strip=True,
        error_messages={"required": "Describe the image to make."},
        widget=forms.Textarea(
            attrs={"rows": 4, "placeholder": "A lighthouse on a cliff at dusk, oil painting"}
        ),
    )
    size = forms.ChoiceField(choices=[(s, s.replace("x", " × ")) for s in IMAGE_SIZES])
    quality = forms.ChoiceField(choices=[(q, q.capitalize()) for q in IMAGE_QUALITIES])
    n = forms.IntegerField(
        label="Count",
        min_value=1,
        max_value=4,
        error_messages={
            "min_value": "Make between 1 and 4 images.",
            "max_value": "Make between 1 and 4 images.",
            "invalid": "Make between 1 and 4 images.",
            "required": "Make between 1 and 4 images.",
        },
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )

    def body(self, references: list[str]) -> dict:
        """The exact request body the page sends to the images product."""
        data = self.cleaned_data
        return {
            "prompt": data["prompt"],
            "size": data["size"],
            "quality": data["quality"],
            "n": data["n"],
            "response_format": "url",
            "reference_images": references,
        }


class VisionForm(forms.Form):
    """The Vision page's form; the image is an upload or one of the member's images."""

    target = forms.CharField(
        max_length=500,
        strip=True,
        error_messages={"required": "Say what to find in the image."},
        widget=forms.TextInput(attrs={"placeholder": "e.g. red square", "autocomplete": "off"}),
    )
    mode = forms.ChoiceField(
        choices=[("bbox", "Box"), ("grid", "Grid cells")], widget=forms.RadioSelect
    )
