"""The workspace dashboard shows this month's numbers and the latest calls."""

from console.actions import create_key
from console.models import UsageRecord
from console.pricing import format_money
from console.usage import book
from tests.conftest import ACME_CREDIT, tiny_call_with_the_lease_held


def _call(workspace, user, request_id: str, status: int = 200) -> UsageRecord:
    return book(
        request_id=request_id, workspace_id=workspace.pk, api_key_id=None, user_id=user.pk, source="playground",
        product="chat", endpoint="/v1/chat/completions", model="mira", node="sim", status=status, stream=True,
        tokens_in=1000, tokens_out=2000, units={}, latency_ms=120, ttft_ms=30, error="",
    )  # fmt: skip


def test_an_empty_workspace_shows_how_to_start(alice_client):
    page = alice_client.get("/w/acme/").content.decode()
    assert "Get started" in page and "No usage yet" in page
    assert "$100.00" in page  # the balance


def test_the_balance_is_what_is_left_after_charges_and_the_lease_is_held_apart(
    asgi_server, upstream_fleet, acme, alice, alice_client
):
    _key, secret = create_key(workspace=acme, name="Backend", created_by=alice)
    charge, held = tiny_call_with_the_lease_held(asgi_server.url, secret)
    page = alice_client.get("/w/acme/").content.decode()
    left = ACME_CREDIT - charge
    assert (
        f'<div class="value" id="balance" title="{format_money(left, precise=True)}">'
        f"{format_money(left)}</div>"
    ) in page
    assert (
        f'<span id="held">{format_money(held)} held: set aside for calls in progress</span>' in page
    )


def test_usage_shows_in_the_numbers_the_chart_and_recent_calls(alice_client, alice, acme):
    _call(acme, alice, "req_one")
    _call(acme, alice, "req_two", status=502)
    page = alice_client.get("/w/acme/").content.decode()
    assert "Recent calls" in page and "Get started" not in page
    assert '<rect class="dash-bar"' in page
    assert ">2<" in page.replace(" ", "")  # requests this month
    assert "6,000 tokens in and out" in page
    assert "502" in page


def test_another_workspaces_usage_never_shows(alice, acme, charlie_client, charlie, globex):
    _call(acme, alice, "req_acme")
    page = charlie_client.get("/w/globex/").content.decode()
    assert (
        "Get started" in page
        and "req_acme" not in page
        and "mira" not in page.split("Recent calls")[-1]
    )
