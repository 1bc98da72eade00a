"""Prices by variant: a variant path ("quality/size") pays its own price, else the price of
its shorter forms, else the price with no variant; never nothing when a price exists."""

from console.models import Price
from console.pricing import forget_prices, unit_cost, variants
from tests.conftest import seed_prices


def test_a_variant_path_lists_its_more_general_forms():
    assert variants("high/1536x1024") == ["high/1536x1024", "high", ""]
    assert variants("high") == ["high", ""]
    assert variants("") == [""]


def test_an_image_pays_the_price_of_its_quality_and_size(db):
    seed_prices()
    assert unit_cost("images", "", "image", 1, "high/1536x1024") == 120_000
    assert unit_cost("images", "", "image", 2, "low/1024x1536") == 30_000
    assert unit_cost("images", "", "image", 1, "auto/1536x1024") == 60_000


def test_a_size_without_a_price_of_its_own_pays_its_quality_price(db):
    seed_prices()
    assert unit_cost("images", "", "image", 1, "high/1024x1024") == 80_000
    assert unit_cost("images", "", "image", 3, "medium/1024x1024") == 120_000


def test_auto_quality_pays_the_price_with_no_variant(db):
    seed_prices()
    assert unit_cost("images", "", "image", 1, "auto/1024x1024") == 40_000
    assert unit_cost("images", "", "image", 1, "") == 40_000


def test_a_models_own_price_for_the_variant_comes_first_and_a_general_one_after_it(db):
    seed_prices()
    Price.objects.create(product="images", model="mira-image", unit="image", variant="high",
                         amount=90_000)  # fmt: skip
    forget_prices()
    assert unit_cost("images", "mira-image", "image", 1, "high/1024x1024") == 90_000
    # The whole variant's price (for every model) is more particular than the model's
    # price for its quality.
    assert unit_cost("images", "mira-image", "image", 1, "high/1536x1024") == 120_000
    assert unit_cost("images", "other", "image", 1, "high/1024x1024") == 80_000


def test_a_variant_of_a_product_priced_without_variants_pays_that_price(db):
    seed_prices()
    assert unit_cost("vision", "", "image", 1, "anything/at/all") == 2_000
    assert unit_cost("music", "", "image", 1, "high") == 0
