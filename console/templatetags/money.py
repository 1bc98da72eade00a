from django import template

from console.pricing import format_money

register = template.Library()


@register.filter
def money(micro: int | None) -> str:
    """Micro-units as money in the configured currency, e.g. `$1.25`."""
    return format_money(micro or 0)


@register.filter
def money_precise(micro: int | None) -> str:
    """Micro-units with every significant decimal, e.g. `$0.000125`."""
    return format_money(micro or 0, precise=True)
