"""The Usage page, its CSV and a call's detail show "asked → served" for aliased calls."""

import csv
import io
import uuid

from django.utils import timezone

from console.models import UsageRollup
from console.usage import book


def _call(workspace, *, model: str = "mira", model_asked: str = "") -> str:
    request_id = f"req_{uuid.uuid4().hex}"
    book(
        request_id=request_id, workspace_id=workspace.pk, api_key_id=None, user_id=None,
        source="api", product="chat", endpoint="/v1/chat/completions", model=model,
        model_asked=model_asked, node="sim-1", status=200, stream=False, tokens_in=10,
        tokens_out=5, units={}, latency_ms=100, ttft_ms=None, error="",
        created_at=timezone.now(),
    )  # fmt: skip
    return request_id


def test_an_aliased_call_has_a_rollup_of_its_own(acme):
    _call(acme)
    _call(acme, model_asked="claude-sonnet-4-5")
    _call(acme, model_asked="claude-sonnet-4-5")
    rows = {r.model_asked: r.requests for r in UsageRollup.objects.filter(workspace=acme)}
    assert rows == {"": 1, "claude-sonnet-4-5": 2}


def test_the_log_and_the_detail_show_asked_and_served(alice_client, acme):
    plain = _call(acme, model="mira-pro")
    aliased = _call(acme, model_asked="claude-sonnet-4-5")
    page = alice_client.get("/w/acme/usage/").content.decode()
    assert "claude-sonnet-4-5 → </span>mira</strong>" in page
    assert "→ </span>mira-pro" not in page
    detail = alice_client.get(f"/w/acme/usage/{aliased}/").content.decode()
    assert "claude-sonnet-4-5 → mira" in detail and "Model asked for" in detail
    assert "Model served" in detail
    detail = alice_client.get(f"/w/acme/usage/{plain}/").content.decode()
    assert "Model asked for" not in detail and "→" not in detail.split("<h1", 1)[1][:200]


def test_the_csv_groups_aliased_calls_as_asked_and_served(alice_client, acme):
    _call(acme)
    _call(acme, model_asked="gpt-5.1-codex")
    export = alice_client.get("/w/acme/usage/export.csv")
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert sorted((r["model"], r["requests"]) for r in rows) == [
        ("gpt-5.1-codex → mira", "1"),
        ("mira", "1"),
    ]
