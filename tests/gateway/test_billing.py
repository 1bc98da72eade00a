"""Calls hold their worst case, settle to the actual cost, and are refused with 402 when the
balance or a budget cannot cover them, before anything goes upstream."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from django.conf import settings
from django.core import mail
from django.db.models import Count, Sum

from accounts.models import Workspace
from console import ledger
from console.actions import create_key
from console.models import AlertSent, BillingAccount, EntryKind, Hold, LedgerEntry, UsageRecord
from console.pricing import token_cost, worst_case
from tests.conftest import settle_books

CHAT = {
    "model": "mira",
    "messages": [{"role": "user", "content": "Count the waves"}],
    "max_tokens": 1000,
}


def _post(url, secret, body=CHAT, headers=None):
    return httpx.post(
        f"{url}/chat/completions",
        json=body,
        headers={"x-api-key": secret} | (headers or {}),
        timeout=60,
    )


def test_a_call_is_charged_its_actual_cost_and_the_hold_released(console_url, api_key, acme):
    start = ledger.balance_of(acme)
    response = _post(console_url, api_key)
    usage = response.json()["usage"]
    request_id = response.headers["x-request-id"]
    expected = token_cost("chat", "mira", usage["prompt_tokens"], usage["completion_tokens"])
    settle_books()
    record = UsageRecord.objects.get(request_id=request_id)
    assert record.cost == expected > 0
    assert ledger.balance_of(acme) == start - expected
    charges = LedgerEntry.objects.filter(request_id=request_id).values_list("kind", "amount")
    assert list(charges) == [("charge", -expected)]
    # The worker held credit for it in a lease, and gave back what the call did not use.
    lease = LedgerEntry.objects.filter(kind="hold").get()
    kinds = LedgerEntry.objects.filter(request_id=lease.request_id).order_by("id")
    assert [e.kind for e in kinds] == ["hold", "release", "release"]
    assert sum(e.amount for e in kinds) == 0
    assert not Hold.objects.exists()


def test_a_call_the_balance_cannot_cover_is_402_and_nothing_goes_upstream(
    console_url, alice, simulator
):
    poor = Workspace.objects.create(name="Poor", slug="poor")
    _key, secret = create_key(workspace=poor, name="k", created_by=alice)
    before = simulator.stats()["requests"]
    sent = []
    client = openai.OpenAI(
        base_url=console_url,
        api_key=secret,
        http_client=httpx.Client(event_hooks={"request": [sent.append]}),
    )
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**CHAT)
    assert caught.value.status_code == 402
    assert "Insufficient balance" in caught.value.message
    assert len(sent) == 1  # the SDK did not retry
    assert simulator.stats()["requests"] == before
    settle_books()
    assert (
        not UsageRecord.objects.exists() and not LedgerEntry.objects.filter(workspace=poor).exists()
    )


def test_concurrent_calls_cannot_overspend_the_balance(console_url, alice, acme):
    _k, probe = create_key(workspace=acme, name="probe", created_by=alice)
    # Every call writes all of its max_tokens, so each one costs exactly what it holds,
    # and exactly twenty fit in the balance however the calls interleave.
    body = CHAT | {
        "max_tokens": 40,
        "messages": [{"role": "user", "content": "Tell me a long story"}],
    }
    first = _post(console_url, probe, body=body)
    assert first.json()["choices"][0]["finish_reason"] == "length"
    settle_books()
    record = UsageRecord.objects.get()
    worst = worst_case("chat", "mira", record.tokens_in, 40)
    assert record.cost == worst
    tight = Workspace.objects.create(name="Tight", slug="tight")
    ledger.grant(
        workspace=tight, amount=20 * worst + worst // 2, note="exactly twenty holds", by=None
    )
    _key, secret = create_key(workspace=tight, name="k", created_by=alice)
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(
            pool.map(
                lambda _: _post(
                    console_url, secret, body=body, headers={"x-sim-latency-ms": "300"}
                ),
                range(50),
            )
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 20 and statuses.count(402) == 30
    settle_books()
    account = BillingAccount.objects.get(workspace=tight)
    entries = LedgerEntry.objects.filter(workspace=tight)
    assert account.balance == worst // 2 == entries.aggregate(s=Sum("amount"))["s"]
    ok_ids = {r.headers["x-request-id"] for r in responses if r.status_code == 200}
    charges = entries.filter(kind=EntryKind.CHARGE).values("request_id").annotate(n=Count("id"))
    assert {c["request_id"] for c in charges} == ok_ids and {c["n"] for c in charges} == {1}
    assert UsageRecord.objects.filter(workspace=tight).count() == 20
    assert not Hold.objects.filter(workspace=tight).exists()


def test_a_stream_cut_by_the_client_is_charged_for_what_was_delivered(console_url, api_key, acme):
    start = ledger.balance_of(acme)
    body = CHAT | {
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me a long story about rivers"}],
    }
    with httpx.stream("POST", f"{console_url}/chat/completions", json=body, timeout=30,
                      headers={"x-api-key": api_key, "x-sim-chunk-delay-ms": "50"}) as response:  # fmt: skip
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen >= 5:
                break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        settle_books()  # once the gateway has noticed that the client left
        if UsageRecord.objects.exists():
            break
        time.sleep(0.05)
    record = UsageRecord.objects.get()
    assert record.status == 499 and 0 < record.tokens_out < 1000
    assert record.cost == token_cost("chat", "mira", record.tokens_in, record.tokens_out)
    assert ledger.balance_of(acme) == start - record.cost
    assert not Hold.objects.exists()


# Each of these calls writes all of its max_tokens: it costs exactly what it holds.
EXACT = CHAT | {"max_tokens": 40, "messages": [{"role": "user", "content": "Tell me a long story"}]}


def _exact_cost(url, secret) -> int:
    response = _post(url, secret, body=EXACT)
    assert response.json()["choices"][0]["finish_reason"] == "length"
    settle_books()
    return UsageRecord.objects.get(request_id=response.headers["x-request-id"]).cost


def test_a_key_budget_refuses_calls_once_used_and_alerts_once_per_threshold(
    console_url, alice, bob, acme
):
    _k, probe = create_key(workspace=acme, name="probe", created_by=alice)
    cost = _exact_cost(console_url, probe)
    mail.outbox.clear()
    _key, secret = create_key(
        workspace=acme, name="budgeted", created_by=alice, monthly_budget=4 * cost
    )
    statuses = [_post(console_url, secret, body=EXACT).status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 200, 402, 402]
    refused = _post(console_url, secret, body=EXACT)
    assert "The monthly budget of this API key is used up" in refused.json()["detail"]
    settle_books()
    alerts = list(
        AlertSent.objects.filter(api_key__name="budgeted")
        .order_by("threshold")
        .values_list("threshold", flat=True)
    )
    assert alerts == [50, 80, 100]
    emails = [m for m in mail.outbox if "monthly budget" in m.subject]
    assert [m.subject for m in emails] == [
        "Acme: 50% of the monthly budget used",
        "Acme: 80% of the monthly budget used",
        "Acme: 100% of the monthly budget used",
    ]
    for message in emails:
        assert message.to == ["alice@example.com"]  # owners and admins, not bob the developer
        assert "the API key budgeted" in message.body
    assert "now refused with HTTP 402" in emails[-1].body


def test_a_workspace_limit_refuses_calls_and_alerts_admins_too(
    console_url, api_key, acme, member_of_acme
):
    member_of_acme("admin")
    cost = _exact_cost(console_url, api_key)
    account = BillingAccount.objects.get(workspace=acme)
    account.monthly_limit = 3 * cost  # the first call already spent one of three
    account.save()
    mail.outbox.clear()
    statuses = [_post(console_url, api_key, body=EXACT).status_code for _ in range(4)]
    assert statuses == [200, 200, 402, 402]
    refused = _post(console_url, api_key, body=EXACT).json()["detail"]
    assert "The monthly budget of this workspace is used up" in refused
    settle_books()
    alerts = list(
        AlertSent.objects.filter(api_key=None)
        .order_by("threshold")
        .values_list("threshold", flat=True)
    )
    assert alerts == [50, 80, 100]
    assert len(mail.outbox) == 3
    assert sorted(mail.outbox[0].to) == ["admin@example.com", "alice@example.com"]
    assert "the workspace" in mail.outbox[0].body


def _node_that_refuses() -> str:
    """The URL of a loopback port nobody listens on."""
    from tests.conftest import free_port

    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(
    "failure, status",
    [
        ({"x-sim-status": "500"}, 502),
        ({"x-sim-status": "502"}, 502),
        ({"x-sim-status": "503"}, 503),
        ({"x-sim-hang": "1"}, 504),
        ("refused", 502),
    ],
    ids=["500", "502", "503", "timeout", "refused"],
)
def test_an_upstream_failure_before_the_first_byte_costs_nothing(
    console_url, api_key, acme, upstream_fleet, failure, status, stream
):
    from dataclasses import replace

    from upstream.fleet import Fleet, set_fleet
    from upstream.nodes import NodeConfig

    fleet = upstream_fleet
    if failure == "refused":
        node = NodeConfig(name="gone", base_url=_node_that_refuses(), api_key="k")
        fleet = Fleet([node], options=upstream_fleet.options)
        set_fleet(fleet)  # the fixture puts the previous fleet back
        failure = {}
    fleet.options = replace(
        fleet.options,
        timeouts=replace(fleet.options.timeouts, first_byte=0.3),
        max_attempts=1,
    )
    start = ledger.balance_of(acme)
    response = _post(console_url, api_key, CHAT | {"stream": stream}, headers=failure)
    assert response.status_code == status
    settle_books()
    record = UsageRecord.objects.get(request_id=response.headers["x-request-id"])
    assert (record.status, record.cost) == (status, 0)
    assert not LedgerEntry.objects.filter(request_id=record.request_id, kind="charge").exists()
    assert ledger.balance_of(acme) == start


def _budget_key(alice, acme) -> str:
    """A key with a monthly budget: its calls hold one by one, so each hold is in the ledger."""
    _key, secret = create_key(
        workspace=acme, name="budgeted", created_by=alice, monthly_budget=50 * 1_000_000
    )
    return secret


def _held_and_charged(request_id: str) -> tuple[int, int]:
    settle_books()
    entries = LedgerEntry.objects.filter(request_id=request_id)
    held = -entries.get(kind=EntryKind.HOLD).amount
    charged = -entries.get(kind=EntryKind.CHARGE).amount
    return held, charged


def test_a_call_of_three_choices_without_max_tokens_is_charged_all_it_wrote_within_its_hold(
    console_url, alice, acme
):
    # Each choice writes about 2,500 tokens: three of them are more than one default limit.
    reply = "river " * 1250
    body = {
        "model": "mira",
        "n": 3,
        "messages": [{"role": "user", "content": f"reply with: {reply}"}],
    }
    response = _post(console_url, _budget_key(alice, acme), body=body)
    assert response.status_code == 200
    data = response.json()
    assert [c["finish_reason"] for c in data["choices"]] == ["stop"] * 3
    usage = data["usage"]
    assert usage["completion_tokens"] > settings.GATEWAY_DEFAULT_MAX_TOKENS
    actual = token_cost("chat", "mira", usage["prompt_tokens"], usage["completion_tokens"])
    held, charged = _held_and_charged(response.headers["x-request-id"])
    assert charged == actual == UsageRecord.objects.get().cost
    assert held >= actual


@pytest.mark.parametrize(
    ("path", "body", "written"),
    [
        ("/chat/completions", {"messages": [{"role": "user", "content": "PROMPT"}]},
         lambda data: data["usage"]["completion_tokens"]),
        ("/responses", {"input": "PROMPT"}, lambda data: data["usage"]["output_tokens"]),
    ],
)  # fmt: skip
def test_a_call_without_a_limit_is_sent_the_limit_it_held_for_and_charged_all_it_wrote(
    console_url, alice, acme, path, body, written
):
    # mira-max writes up to 16,384 tokens of its own accord; this reply is longer than the
    # console's default limit, which is all that the call holds for.
    prompt = "reply with: " + "river " * 3000
    body = {"model": "mira-max"} | {k: (v if v != "PROMPT" else prompt) for k, v in body.items()}
    if "messages" in body:
        body["messages"] = [{"role": "user", "content": prompt}]
    response = httpx.post(
        f"{console_url}{path}",
        json=body,
        headers={"x-api-key": _budget_key(alice, acme)},
        timeout=60,
    )
    assert response.status_code == 200
    data = response.json()
    assert written(data) == settings.GATEWAY_DEFAULT_MAX_TOKENS
    held, charged = _held_and_charged(response.headers["x-request-id"])
    record = UsageRecord.objects.get()
    assert record.tokens_out == settings.GATEWAY_DEFAULT_MAX_TOKENS
    assert (
        charged
        == record.cost
        == token_cost(record.product, "mira-max", record.tokens_in, record.tokens_out)
    )
    assert held >= charged


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", CHAT | {"max_tokens": 100_000}),
        ("/chat/completions", CHAT | {"max_completion_tokens": 100_000, "max_tokens": 200_000}),
        ("/responses", {"model": "mira", "input": "Count the waves", "max_output_tokens": 100_000}),
        ("/messages", {"model": "mira", "max_tokens": 100_000, "messages": CHAT["messages"]}),
    ],
)
def test_a_limit_above_the_models_own_is_clamped_to_it_as_upstream_and_only_that_is_held(
    console_url, alice, path, body
):
    # $0.05 covers mira's 4,096 tokens (about $0.006) but not 100,000 (about $0.15).
    lean = Workspace.objects.create(name="Lean", slug="lean")
    ledger.grant(workspace=lean, amount=50_000, note="a little credit", by=None)
    _key, secret = create_key(workspace=lean, name="k", created_by=alice)
    response = httpx.post(
        f"{console_url}{path}", json=body, headers={"x-api-key": secret}, timeout=60
    )
    assert response.status_code == 200
    settle_books()
    assert UsageRecord.objects.get(workspace=lean).status == 200
