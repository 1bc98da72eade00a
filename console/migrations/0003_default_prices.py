"""The prices a new installation starts with (micro-units per `per` units)."""

from django.db import migrations

PRICES = [
    ("chat", "mira", "input_token", "", 500000, 1000000),
    ("chat", "mira", "output_token", "", 1500000, 1000000),
    ("chat", "mira-thinking", "input_token", "", 750000, 1000000),
    ("chat", "mira-thinking", "output_token", "", 2500000, 1000000),
    ("chat", "mira-pro", "input_token", "", 1000000, 1000000),
    ("chat", "mira-pro", "output_token", "", 3000000, 1000000),
    ("chat", "mira-max", "input_token", "", 2500000, 1000000),
    ("chat", "mira-max", "output_token", "", 7500000, 1000000),
    ("chat", "", "input_token", "", 1000000, 1000000),
    ("chat", "", "output_token", "", 3000000, 1000000),
    ("responses", "", "input_token", "", 500000, 1000000),
    ("responses", "", "output_token", "", 1500000, 1000000),
    ("embeddings", "", "embedding_token", "", 20000, 1000000),
    ("images", "", "image", "low", 10000, 1),
    ("images", "", "image", "medium", 40000, 1),
    ("images", "", "image", "high", 80000, 1),
    ("images", "", "image", "", 40000, 1),
    ("audio", "", "speech_character", "", 15000000, 1000000),
    ("audio", "", "transcription_second", "", 100, 1),
    ("realtime", "", "realtime_minute", "", 60000, 1),
    ("music", "", "music_second", "", 20000, 1),
    ("video", "", "video_second", "", 100000, 1),
    ("vision", "", "image", "", 2000, 1),
]


def seed(apps, schema_editor):
    Price = apps.get_model("console", "Price")
    Price.objects.bulk_create(
        Price(product=product, model=model, unit=unit, variant=variant, amount=amount, per=per)
        for product, model, unit, variant, amount, per in PRICES
    )


class Migration(migrations.Migration):
    dependencies = [("console", "0002_billing")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
