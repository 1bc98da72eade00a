from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from console import ledger


class Command(BaseCommand):
    help = "Release holds left by workers that stopped mid-call (safe to run periodically, e.g. from cron)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than-minutes",
            type=int,
            default=settings.STALE_HOLD_MINUTES,
            help="only holds at least this old (default: STALE_HOLD_MINUTES)",
        )

    def handle(self, *args, older_than_minutes: int, **options) -> None:
        released = ledger.release_stale(older_than=timedelta(minutes=older_than_minutes))
        self.stdout.write(f"Released {released} stale hold{'s' if released != 1 else ''}.")
