"""Streams are relayed chunk by chunk, kept alive, ended with an error event on failure,
and booked exactly once whatever becomes of the caller."""

import json
import time

import httpx
import pytest
from django.test import override_settings

from console.models import UsageRecord
from tests.conftest import usage_records
from tests.upstream_fixtures import wait_for
from upstream.fleet import get_fleet
from upstream.tokens import count_tokens

CHAT = {
    "model": "mira",
    "messages": [{"role": "user", "content": "Tell me a long story about rivers"}],
    "stream": True,
}


@pytest.fixture
def api(console_url, api_key):
    with httpx.Client(
        base_url=console_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as client:
        yield client


def _wait_for_record(timeout: float = 10.0) -> UsageRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = usage_records().first()
        if record:
            return record
        time.sleep(0.05)
    raise AssertionError("no usage record was written")


def _data_lines(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def test_chunks_reach_the_caller_before_the_reply_is_complete(api):
    with api.stream(
        "POST", "/chat/completions", json=CHAT, headers={"x-sim-chunk-delay-ms": "60"}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        # The first chunk is here while the upstream is still producing the rest.
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        assert not usage_records().exists()
        rest = list(lines)
    assert rest[-2:] == ["data: [DONE]", ""] or rest[-1] == "data: [DONE]"
    assert usage_records().get().status == 200


def test_a_finished_stream_is_closed_upstream_once_sent(api):
    for _ in range(3):
        text = api.post("/chat/completions", json=CHAT).text
        assert text.endswith("data: [DONE]\n\n")
    assert usage_records().filter(status=200).count() == 3
    # The fleet counts a stream as outstanding on its node until it is closed.
    assert wait_for(lambda: [node["outstanding"] for node in get_fleet().state()] == [0])


def test_usage_is_relayed_only_when_asked_for(api):
    plain = _data_lines(api.post("/chat/completions", json=CHAT).text)
    assert not any('"usage"' in line for line in plain[:-1])
    asked = _data_lines(
        api.post("/chat/completions", json=CHAT | {"stream_options": {"include_usage": True}}).text
    )
    usage = json.loads(asked[-2])["usage"]
    assert usage["completion_tokens"] > 0
    records = list(usage_records().order_by("created_at"))
    assert records[1].tokens_out == usage["completion_tokens"]
    assert records[0].tokens_out == records[1].tokens_out  # usage was requested upstream both times


def test_a_caller_that_leaves_mid_stream_is_charged_for_what_was_delivered(api, simulator):
    cancelled_before = simulator.stats()["streams_cancelled"]
    delivered = []
    with api.stream(
        "POST", "/chat/completions", json=CHAT, headers={"x-sim-chunk-delay-ms": "50"}
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                delivered.append(delta.get("content") or "")
            if len(delivered) >= 4:
                break
    record = _wait_for_record()
    assert usage_records().count() == 1
    assert record.status == 499 and record.stream
    assert 0 < record.tokens_out <= count_tokens("".join(delivered)) + 2
    # The upstream call was cancelled too, not left running.
    deadline = time.monotonic() + 5
    while (
        simulator.stats()["streams_cancelled"] == cancelled_before and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert simulator.stats()["streams_cancelled"] > cancelled_before


def test_an_upstream_failure_mid_stream_ends_with_an_error_event(api):
    text = api.post("/chat/completions", json=CHAT, headers={"x-sim-reset-after-chunks": "3"}).text
    events = _data_lines(text)
    assert "[DONE]" not in events
    error = json.loads(events[-1])
    assert error["error"]["type"] == "api_error" and "upstream" in error["detail"].lower()
    assert len(events) >= 3
    record = usage_records().get()
    assert record.status == 502 and record.error


def test_a_failure_before_the_first_chunk_is_an_ordinary_http_error(api):
    response = api.post(
        "/chat/completions", json=CHAT, headers={"x-sim-status": "400", "x-sim-detail": "Nope."}
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "Nope."


def test_long_waits_get_keep_alive_comments(api):
    with override_settings(GATEWAY_KEEPALIVE_SECONDS=0.1):
        text = api.post(
            "/chat/completions",
            json=CHAT | {"max_tokens": 3},
            headers={"x-sim-chunk-delay-ms": "400"},
        ).text
    assert ": keep-alive" in text
    assert text.rstrip().endswith("data: [DONE]")


def test_a_stream_keeps_the_line_open_until_the_upstreams_first_byte(api):
    with override_settings(GATEWAY_KEEPALIVE_SECONDS=0.1):
        text = api.post(
            "/chat/completions",
            json=CHAT | {"max_tokens": 3},
            headers={"x-sim-latency-ms": "600"},
        ).text
    before_first_chunk = text.split("data: ")[0]
    assert before_first_chunk.count(": keep-alive") >= 3
    assert text.rstrip().endswith("data: [DONE]")
    record = usage_records().get()
    assert record.status == 200 and record.tokens_out > 0 and record.cost > 0


def test_an_upstream_that_never_starts_ends_a_kept_alive_stream_with_an_error_event(
    api, upstream_fleet
):
    from dataclasses import replace

    upstream_fleet.options = replace(
        upstream_fleet.options,
        timeouts=replace(upstream_fleet.options.timeouts, first_byte=0.5),
        max_attempts=1,
    )
    with override_settings(GATEWAY_KEEPALIVE_SECONDS=0.1):
        response = api.post("/chat/completions", json=CHAT, headers={"x-sim-hang": "1"})
    assert response.status_code == 200  # the stream had started, to keep the line open
    assert response.text.startswith(": keep-alive")
    error = json.loads(_data_lines(response.text)[-1])
    assert "did not answer in time" in error["detail"]
    assert "[DONE]" not in response.text
    record = usage_records().get()
    assert (record.status, record.cost) == (504, 0)


def test_anthropic_stream_events_come_in_order(api):
    body = {
        "model": "mira",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "Hi there"}],
    }
    text = api.post("/messages", json=body).text
    events = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert events[:3] == ["message_start", "ping", "content_block_start"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(events[3:-3]) == {"content_block_delta"}


def test_anthropic_stream_failure_ends_with_an_error_event(api):
    body = {
        "model": "mira",
        "max_tokens": 500,
        "stream": True,
        "messages": [{"role": "user", "content": "Hi there"}],
    }
    text = api.post("/messages", json=body, headers={"x-sim-reset-after-chunks": "3"}).text
    assert "event: error" in text and "message_stop" not in text
