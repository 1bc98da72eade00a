"""Prices in force, and what a call costs (or may cost at worst) in micro-units."""

import time

from django.conf import settings

from console.models import Price, Product, Unit

MICRO = 1_000_000
TOKENS = 1_000_000  # token prices are per million tokens

# (product, model, unit, variant, amount in micro-units, per): the defaults a new
# installation starts with. Staff change them in the Django admin; a change is a new
# version, so what was charged before keeps its price.
#
# A variant may be a path from the general to the particular, e.g. an image's
# "quality/size" ("high/1536x1024"): a call is charged the price of its whole variant,
# else of its shorter forms ("high"), else the price with no variant (see `unit_cost`).
# An image of quality "auto" has no price of its own, so it pays the price with no
# variant; its larger sizes are priced as "auto/<size>".
DEFAULT_PRICES: list[tuple[str, str, str, str, int, int]] = [
    (Product.CHAT, "mira", Unit.INPUT_TOKEN, "", 500_000, TOKENS),
    (Product.CHAT, "mira", Unit.OUTPUT_TOKEN, "", 1_500_000, TOKENS),
    (Product.CHAT, "mira-thinking", Unit.INPUT_TOKEN, "", 750_000, TOKENS),
    (Product.CHAT, "mira-thinking", Unit.OUTPUT_TOKEN, "", 2_500_000, TOKENS),
    (Product.CHAT, "mira-pro", Unit.INPUT_TOKEN, "", 1_000_000, TOKENS),
    (Product.CHAT, "mira-pro", Unit.OUTPUT_TOKEN, "", 3_000_000, TOKENS),
    (Product.CHAT, "mira-max", Unit.INPUT_TOKEN, "", 2_500_000, TOKENS),
    (Product.CHAT, "mira-max", Unit.OUTPUT_TOKEN, "", 7_500_000, TOKENS),
    (Product.CHAT, "", Unit.INPUT_TOKEN, "", 1_000_000, TOKENS),
    (Product.CHAT, "", Unit.OUTPUT_TOKEN, "", 3_000_000, TOKENS),
    (Product.RESPONSES, "", Unit.INPUT_TOKEN, "", 500_000, TOKENS),
    (Product.RESPONSES, "", Unit.OUTPUT_TOKEN, "", 1_500_000, TOKENS),
    (Product.EMBEDDINGS, "", Unit.EMBEDDING_TOKEN, "", 20_000, TOKENS),
    (Product.IMAGES, "", Unit.IMAGE, "low", 10_000, 1),
    (Product.IMAGES, "", Unit.IMAGE, "medium", 40_000, 1),
    (Product.IMAGES, "", Unit.IMAGE, "high", 80_000, 1),
    (Product.IMAGES, "", Unit.IMAGE, "", 40_000, 1),
    (Product.IMAGES, "", Unit.IMAGE, "low/1024x1536", 15_000, 1),
    (Product.IMAGES, "", Unit.IMAGE, "low/1536x1024", 15_000, 1),
    (Product.IMAGES, "", Unit.IMAGE, "medium/1024x1536", 60_000, 1),
    (Product.IMAGES, "", Unit.IMAGE, "medium/1536x1024", 60_000, 1),
    (Product.IMAGES, "", Unit.IMAGE, "high/1024x1536", 120_000, 1),
    (Product.IMAGES, "", Unit.IMAGE, "high/1536x1024", 120_000, 1),
    (Product.IMAGES, "", Unit.IMAGE, "auto/1024x1536", 60_000, 1),
    (Product.IMAGES, "", Unit.IMAGE, "auto/1536x1024", 60_000, 1),
    (Product.AUDIO, "", Unit.SPEECH_CHARACTER, "", 15_000_000, TOKENS),
    (Product.AUDIO, "", Unit.TRANSCRIPTION_SECOND, "", 100, 1),
    (Product.REALTIME, "", Unit.REALTIME_MINUTE, "", 60_000, 1),
    (Product.MUSIC, "", Unit.MUSIC_SECOND, "", 20_000, 1),
    (Product.VIDEO, "", Unit.VIDEO_SECOND, "", 100_000, 1),
    (Product.VISION, "", Unit.IMAGE, "", 2_000, 1),
    (Product.FETCH, "", Unit.PAGE, "", 1_000, 1),
]

_CACHE_SECONDS = 30.0
_table: dict[tuple[str, str, str, str], tuple[int, int]] = {}
_loaded_at = -1e9


def _prices() -> dict[tuple[str, str, str, str], tuple[int, int]]:
    global _table, _loaded_at
    if time.monotonic() - _loaded_at > _CACHE_SECONDS:
        _table = {
            (p.product, p.model, p.unit, p.variant): (p.amount, p.per)
            for p in Price.objects.in_force()
        }
        _loaded_at = time.monotonic()
    return _table


def fresh() -> bool:
    """Whether the prices can be read without a query (from any thread, an event loop's too)."""
    return time.monotonic() - _loaded_at < _CACHE_SECONDS


def refresh() -> None:
    """Reload the prices a little before they go stale, so that callers rarely find them so."""
    global _loaded_at
    if time.monotonic() - _loaded_at > _CACHE_SECONDS * 2 / 3:
        _loaded_at = -1e9
        _prices()


def forget_prices() -> None:
    global _loaded_at
    _loaded_at = -1e9


def variants(variant: str) -> list[str]:
    """A variant and its more general forms, most particular first:
    "high/1536x1024" -> ["high/1536x1024", "high", ""]."""
    parts = variant.split("/") if variant else []
    return ["/".join(parts[:length]) for length in range(len(parts), -1, -1)]


_NO_VARIANT = ("",)  # token calls, every call on the hot path: no list to build


def unit_cost(product: str, model: str, unit: str, quantity: int, variant: str = "") -> int:
    """The cost of `quantity` units at the price of the most particular form of `variant`
    that has one (see `variants`), the model's own before the product's; else nothing."""
    if quantity <= 0:
        return 0
    table = _prices()
    for form in variants(variant) if variant else _NO_VARIANT:
        for key in ((product, model, unit, form), (product, "", unit, form)):
            if key in table:
                amount, per = table[key]
                return -(-quantity * amount // per)
    return 0


def token_cost(product: str, model: str, tokens_in: int, tokens_out: int) -> int:
    if product == Product.EMBEDDINGS:
        return unit_cost(product, model, Unit.EMBEDDING_TOKEN, tokens_in)
    return unit_cost(product, model, Unit.INPUT_TOKEN, tokens_in) + unit_cost(
        product, model, Unit.OUTPUT_TOKEN, tokens_out
    )


def worst_case(product: str, model: str, tokens_in: int, max_tokens: int | None) -> int:
    """The most a token-priced call may cost: its prompt plus every token it may write."""
    limit = max_tokens or settings.GATEWAY_DEFAULT_MAX_TOKENS
    return token_cost(product, model, tokens_in, 0 if product == Product.EMBEDDINGS else limit)


def format_money(micro: int, *, precise: bool = False) -> str:
    """`$1.25`, or with `precise` as many decimals as needed down to a millionth."""
    sign = "-" if micro < 0 else ""
    micro = abs(micro)
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(settings.BILLING_CURRENCY)
    whole, fraction = divmod(micro, MICRO)
    if precise:
        digits = f"{fraction:06d}".rstrip("0")
        digits = digits.ljust(2, "0")
    else:
        cents = (fraction + 5_000) // 10_000
        if cents == 100:
            whole, cents = whole + 1, 0
        digits = f"{cents:02d}"
    amount = f"{whole:,}.{digits}"
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {settings.BILLING_CURRENCY}"
