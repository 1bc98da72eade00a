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


# The speech formats the page offers: those a browser's <audio> plays. The gateway also
# takes `pcm` (raw samples, no container) and `opus`, which the simulator does not make.
SPEECH_FORMATS = [("mp3", "MP3"), ("wav", "WAV")]
MAX_SPEECH_CHARACTERS = 4096
_SPEED_ERRORS = {
    "min_value": "Choose a speed between 0.25 and 4.",
    "max_value": "Choose a speed between 0.25 and 4.",
    "invalid": "Choose a speed between 0.25 and 4.",
    "required": "Choose a speed between 0.25 and 4.",
}


class SpeechForm(forms.Form):
    """The Voice page's speech form: a text, a voice (two to compare), a speed and a format.

    `voices` are (id, label) pairs of the voices the gateway lists.
    """

    input = forms.CharField(
        label="Text",
        max_length=MAX_SPEECH_CHARACTERS,
        strip=True,
        error_messages={
            "required": "Write the text to speak.",
            "max_length": f"Keep the text to {MAX_SPEECH_CHARACTERS:,} characters.",
        },
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "Hello! This is how I sound."}),
    )
    voice = forms.ChoiceField(error_messages={"invalid_choice": "Pick one of the voices."})
    voice_b = forms.ChoiceField(
        label="Second voice",
        required=False,
        error_messages={"invalid_choice": "Pick one of the voices."},
    )
    speed = forms.FloatField(
        min_value=0.25,
        max_value=4.0,
        error_messages=_SPEED_ERRORS,
        widget=forms.NumberInput(attrs={"step": "0.05", "inputmode": "decimal"}),
    )
    response_format = forms.ChoiceField(label="Format", choices=SPEECH_FORMATS)

    def __init__(self, *args, voices: list[tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["voice"].choices = voices
        self.fields["voice_b"].choices = [("", "Pick a second voice")] + voices

    def clean(self) -> dict:
        data = super().clean()
        comparing = self.data.get("action") == "compare"
        if comparing and not data.get("voice_b"):
            self.add_error("voice_b", "Pick a second voice to compare with.")
        elif comparing and data.get("voice_b") == data.get("voice"):
            self.add_error("voice_b", "Pick a voice other than the first.")
        return data

    @property
    def comparing(self) -> bool:
        return self.data.get("action") == "compare"

    def bodies(self) -> list[dict]:
        """The exact request bodies the page sends: one, or one per voice compared."""
        data = self.cleaned_data
        voices = [data["voice"]] + ([data["voice_b"]] if self.comparing else [])
        return [
            {
                "input": data["input"],
                "voice": voice,
                "response_format": data["response_format"],
                "speed": data["speed"],
            }
            for voice in voices
        ]


class TranscriptionForm(forms.Form):
    """The Voice page's transcription form; the audio is an uploaded or recorded file."""

    file = forms.FileField(
        label="Audio",
        required=False,  # checked by the view, which says what to do instead
    )
    language = forms.CharField(
        required=False,
        min_length=2,
        max_length=16,
        strip=True,
        error_messages={"min_length": "Write a language code such as en or ru, or leave it empty."},
        widget=forms.TextInput(attrs={"placeholder": "auto", "autocomplete": "off"}),
    )


# The Music and Video pages' forms: every field of `gateway.jobs.MusicRequest` and
# `VideoRequest` (the video's first frame comes beside the form, as the Vision page's image).
MAX_MUSIC_SECONDS = 240
_MUSIC_SECONDS_ERRORS = dict.fromkeys(
    ("min_value", "max_value", "invalid", "required"),
    f"Choose a length between 1 and {MAX_MUSIC_SECONDS} seconds.",
)


def _describe(label: str, placeholder: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        max_length=200,
        strip=True,
        widget=forms.TextInput(attrs={"placeholder": placeholder, "autocomplete": "off"}),
    )


class MusicForm(forms.Form):
    prompt = forms.CharField(
        max_length=4000,
        strip=True,
        error_messages={"required": "Describe the music to make."},
        widget=forms.Textarea(
            attrs={"rows": 3, "placeholder": "A calm piano piece for a rainy morning"}
        ),
    )
    genre = _describe("Genre", "ambient")
    mood = _describe("Mood", "calm")
    style = _describe("Style", "solo piano")
    duration_seconds = forms.IntegerField(
        label="Length (seconds)",
        min_value=1,
        max_value=MAX_MUSIC_SECONDS,
        error_messages=_MUSIC_SECONDS_ERRORS,
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )
    instrumental = forms.BooleanField(label="Instrumental (no vocals)", required=False)
    lyrics = forms.CharField(
        required=False,
        max_length=10_000,
        strip=True,
        widget=forms.Textarea(
            attrs={"rows": 3, "placeholder": "Leave empty to let the model write them"}
        ),
    )

    def clean(self) -> dict:
        data = super().clean()
        if data.get("instrumental") and data.get("lyrics"):
            self.add_error(
                "lyrics", "An instrumental piece has no lyrics: clear them or untick Instrumental."
            )
        return data

    def body(self) -> dict:
        """The exact request body the page sends to the music product."""
        data = self.cleaned_data
        body = {"prompt": data["prompt"]}
        body |= {name: data[name] for name in ("genre", "mood", "style") if data[name]}
        body |= {"duration_seconds": data["duration_seconds"], "instrumental": data["instrumental"]}
        if data["lyrics"]:
            body["lyrics"] = data["lyrics"]
        return body


class VideoForm(forms.Form):
    prompt = forms.CharField(
        max_length=4000,
        strip=True,
        error_messages={"required": "Describe the video to make."},
        widget=forms.Textarea(
            attrs={"rows": 3, "placeholder": "A paper boat drifting down a rainy street"}
        ),
    )
    aspect_ratio = forms.ChoiceField(
        label="Aspect ratio",
        choices=[("16:9", "16:9 wide"), ("9:16", "9:16 tall"), ("1:1", "1:1 square")],
    )
    duration_seconds = forms.TypedChoiceField(
        label="Length", coerce=int, choices=[(5, "5 s"), (10, "10 s")]
    )
    resolution = forms.ChoiceField(choices=[("720p", "720p"), ("1080p", "1080p")])

    def body(self, first_frame: str | None) -> dict:
        """The exact request body the page sends to the video product."""
        data = self.cleaned_data
        body = {"prompt": data["prompt"]}
        if first_frame:
            body["first_frame"] = first_frame
        fields = ("aspect_ratio", "duration_seconds", "resolution")
        return body | {name: data[name] for name in fields}
