from django.conf import settings
from django.core.management.base import BaseCommand

from gateway import media


class Command(BaseCommand):
    help = (
        "Delete stored files (uploads, generated media) older than MEDIA_RETENTION_DAYS. "
        "Run it periodically, e.g. daily from cron or a systemd timer."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--days", type=int, default=None,
            help="keep files this many days (default: MEDIA_RETENTION_DAYS)",
        )  # fmt: skip

    def handle(self, *args, days: int | None, **options) -> None:
        days = settings.MEDIA_RETENTION_DAYS if days is None else days
        if days <= 0:
            self.stdout.write("MEDIA_RETENTION_DAYS is 0: files are kept for ever.")
            return
        count = media.purge(days=days)
        self.stdout.write(
            f"Deleted {count} file{'s' if count != 1 else ''} older than {days} days."
        )
