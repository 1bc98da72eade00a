from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Workspace
from console import balances, ledger
from console.pricing import MICRO, format_money


def parse_amount(text: str) -> int:
    """Currency units as text (`5`, `0.25`) to micro-units; exact, never through a float."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount; write it like 5 or 0.25") from None
    micro = value * MICRO
    if micro != micro.to_integral_value():
        raise ValueError(f"{text!r} has more than six decimals")
    if micro <= 0:
        raise ValueError("the amount must be positive")
    return int(micro)


class Command(BaseCommand):
    help = "Add credit to a workspace's balance, with a note for the audit trail."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--workspace", required=True, help="the workspace's slug")
        parser.add_argument("--amount", required=True, help="in currency units, e.g. 5 or 0.25")
        parser.add_argument("--note", required=True, help="why the credit is added")

    def handle(self, *args, workspace: str, amount: str, note: str, **options) -> None:
        found = Workspace.objects.filter(slug=workspace).first()
        if found is None:
            raise CommandError(f"No workspace with the slug {workspace!r}.")
        try:
            micro = parse_amount(amount)
        except ValueError as exc:
            raise CommandError(f"--amount: {exc}") from None
        ledger.grant(workspace=found, amount=micro, note=note, by=None)
        left = balances.balance_of(workspace_id=found.pk).left
        self.stdout.write(
            f"Added {format_money(micro)} to {found.slug}; the balance is {format_money(left)}."
        )
