"""The ledger is append-only in the database itself.

Triggers refuse to update a ledger entry, except to clear its author when the author
is deleted (on_delete=SET_NULL updates only that column, to NULL), and to delete an
entry unless its workspace is marked in console_ledgerpurge, as deleting a workspace
does for the length of its own transaction (console.purge). PostgreSQL's TRUNCATE,
which its flush uses, fires no row triggers.
"""

from django.db import migrations

SQLITE = [
    "CREATE TABLE console_ledgerpurge (workspace_id integer NOT NULL PRIMARY KEY)",
    """
    CREATE TRIGGER console_ledgerentry_unchanged
    BEFORE UPDATE OF id, workspace_id, kind, amount, balance_after, request_id, note, created_at
    ON console_ledgerentry
    BEGIN
        SELECT RAISE(ABORT, 'ledger entries are append-only: an entry cannot be changed');
    END
    """,
    """
    CREATE TRIGGER console_ledgerentry_author_only_cleared
    BEFORE UPDATE OF created_by_id ON console_ledgerentry
    WHEN NEW.created_by_id IS NOT NULL
    BEGIN
        SELECT RAISE(ABORT, 'ledger entries are append-only: the author can only be cleared');
    END
    """,
    """
    CREATE TRIGGER console_ledgerentry_kept
    BEFORE DELETE ON console_ledgerentry
    WHEN NOT EXISTS (SELECT 1 FROM console_ledgerpurge WHERE workspace_id = OLD.workspace_id)
    BEGIN
        SELECT RAISE(ABORT, 'ledger entries are append-only: an entry goes only with its workspace');
    END
    """,
]
SQLITE_REVERSE = [
    "DROP TRIGGER console_ledgerentry_kept",
    "DROP TRIGGER console_ledgerentry_author_only_cleared",
    "DROP TRIGGER console_ledgerentry_unchanged",
    "DROP TABLE console_ledgerpurge",
]

POSTGRESQL = [
    "CREATE TABLE console_ledgerpurge (workspace_id bigint NOT NULL PRIMARY KEY)",
    """
    CREATE FUNCTION console_ledgerentry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND EXISTS (
            SELECT 1 FROM console_ledgerpurge WHERE workspace_id = OLD.workspace_id
        ) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'ledger entries are append-only: %', TG_ARGV[0]
            USING ERRCODE = 'restrict_violation';
    END
    $$
    """,
    """
    CREATE TRIGGER console_ledgerentry_unchanged
    BEFORE UPDATE OF id, workspace_id, kind, amount, balance_after, request_id, note, created_at
    ON console_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION console_ledgerentry_append_only('an entry cannot be changed')
    """,
    """
    CREATE TRIGGER console_ledgerentry_author_only_cleared
    BEFORE UPDATE OF created_by_id ON console_ledgerentry
    FOR EACH ROW WHEN (NEW.created_by_id IS NOT NULL)
    EXECUTE FUNCTION console_ledgerentry_append_only('the author can only be cleared')
    """,
    """
    CREATE TRIGGER console_ledgerentry_kept
    BEFORE DELETE ON console_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION console_ledgerentry_append_only('an entry goes only with its workspace')
    """,
]
POSTGRESQL_REVERSE = [
    "DROP TRIGGER console_ledgerentry_kept ON console_ledgerentry",
    "DROP TRIGGER console_ledgerentry_author_only_cleared ON console_ledgerentry",
    "DROP TRIGGER console_ledgerentry_unchanged ON console_ledgerentry",
    "DROP FUNCTION console_ledgerentry_append_only()",
    "DROP TABLE console_ledgerpurge",
]


def _run(schema_editor, statements: dict[str, list[str]]) -> None:
    vendor = schema_editor.connection.vendor
    if vendor not in statements:
        raise RuntimeError(f"The append-only ledger has no triggers for {vendor}.")
    for statement in statements[vendor]:
        schema_editor.execute(statement, params=None)  # no parameters: % is plpgsql's own


def forwards(apps, schema_editor) -> None:
    _run(schema_editor, {"sqlite": SQLITE, "postgresql": POSTGRESQL})


def backwards(apps, schema_editor) -> None:
    _run(schema_editor, {"sqlite": SQLITE_REVERSE, "postgresql": POSTGRESQL_REVERSE})


class Migration(migrations.Migration):
    dependencies = [("console", "0006_key_created_by_key")]

    operations = [migrations.RunPython(forwards, backwards)]
