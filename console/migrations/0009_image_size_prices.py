"""Prices for the larger image sizes, as "quality/size" variants (console.pricing)."""

from django.db import migrations

PRICES = [
    ("images", "", "image", "low/1024x1536", 15000, 1),
    ("images", "", "image", "low/1536x1024", 15000, 1),
    ("images", "", "image", "medium/1024x1536", 60000, 1),
    ("images", "", "image", "medium/1536x1024", 60000, 1),
    ("images", "", "image", "high/1024x1536", 120000, 1),
    ("images", "", "image", "high/1536x1024", 120000, 1),
    ("images", "", "image", "auto/1024x1536", 60000, 1),
    ("images", "", "image", "auto/1536x1024", 60000, 1),
]


def seed(apps, schema_editor):
    Price = apps.get_model("console", "Price")
    for product, model, unit, variant, amount, per in PRICES:
        # An installation whose staff already priced a variant keeps its own price.
        if not Price.objects.filter(
            product=product, model=model, unit=unit, variant=variant
        ).exists():
            Price.objects.create(
                product=product, model=model, unit=unit, variant=variant, amount=amount, per=per
            )


class Migration(migrations.Migration):
    dependencies = [("console", "0008_uploads_product")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
