"""Gateway fixtures: a key of Alice's workspace and the console served over a real socket."""

import pytest

from console.actions import create_key
from console.models import EntryKind, LedgerEntry, UsageRecord
from tests.conftest import settle_books


@pytest.fixture
def api_key(alice, acme) -> str:
    """A secret for a key of Acme's with every product scope."""
    _key, secret = create_key(workspace=acme, name="test key", created_by=alice)
    return secret


@pytest.fixture
def console_url(asgi_server, upstream_fleet) -> str:
    """The console's /v1 base URL, forwarding to the session's simulator."""
    return f"{asgi_server.url}/v1"


def charged(request_id: str) -> UsageRecord:
    """The call's usage record, once booked; its charge in the ledger is its cost."""
    settle_books()
    record = UsageRecord.objects.get(request_id=request_id)
    charges = LedgerEntry.objects.filter(request_id=request_id, kind=EntryKind.CHARGE)
    assert [entry.amount for entry in charges] == ([-record.cost] if record.cost else [])
    return record
