"""The one way entries leave the append-only ledger: with their workspace.

The database refuses to delete a ledger entry (triggers, migration 0007) unless its
workspace is marked as being purged, in a table the triggers read. Deleting a
workspace through the ORM marks it first (pre_delete), in the deletion's own
transaction, so that its entries are deleted with it, and the mark goes with the
workspace (post_delete): no mark outlives the transaction that made it. `manage.py
flush` marks every workspace the same way (console/management/commands/flush.py).

The table has no model, so that flush itself leaves it alone.
"""

from collections.abc import Iterable

from django.db import connections
from django.db.models.signals import post_delete, pre_delete

from accounts.models import Workspace


def mark(*, workspace_ids: Iterable[int], using: str) -> None:
    """Let these workspaces' entries be deleted, until `unmark` or the transaction's end."""
    with connections[using].cursor() as cursor:
        cursor.executemany(
            "INSERT INTO console_ledgerpurge (workspace_id) VALUES (%s) ON CONFLICT DO NOTHING",
            [[pk] for pk in workspace_ids],
        )


def unmark(*, workspace_ids: Iterable[int], using: str) -> None:
    with connections[using].cursor() as cursor:
        cursor.executemany(
            "DELETE FROM console_ledgerpurge WHERE workspace_id = %s",
            [[pk] for pk in workspace_ids],
        )


def mark_all(*, using: str) -> None:
    with connections[using].cursor() as cursor:
        # WHERE true: without it SQLite would read ON CONFLICT as the SELECT's join.
        cursor.execute(
            "INSERT INTO console_ledgerpurge (workspace_id) "
            "SELECT id FROM accounts_workspace WHERE true ON CONFLICT DO NOTHING"
        )


def unmark_all(*, using: str) -> None:
    with connections[using].cursor() as cursor:
        cursor.execute("DELETE FROM console_ledgerpurge")


def _marking(sender, instance: Workspace, using: str, **kwargs) -> None:
    mark(workspace_ids=[instance.pk], using=using)


def _unmarking(sender, instance: Workspace, using: str, **kwargs) -> None:
    unmark(workspace_ids=[instance.pk], using=using)


def connect() -> None:
    pre_delete.connect(_marking, sender=Workspace, dispatch_uid="console.purge.mark")
    post_delete.connect(_unmarking, sender=Workspace, dispatch_uid="console.purge.unmark")
