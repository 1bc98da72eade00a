"""`manage.py flush`, which empties the ledger the one way it may be emptied: with the
workspaces.

The database refuses to delete a ledger entry unless its workspace is marked as being
purged (console.purge). On SQLite, flush deletes every table's rows in no set order,
so every workspace is marked first, in the same transaction; on PostgreSQL flush
truncates, which the ledger's row triggers do not see, and the marks do no harm.
"""

from django.core.management.commands import flush
from django.db import transaction

from console import purge


class Command(flush.Command):
    def handle(self, **options) -> None:
        using = options["database"]
        with transaction.atomic(using=using):
            purge.mark_all(using=using)
            super().handle(**options)
            purge.unmark_all(using=using)
