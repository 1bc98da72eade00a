"""Health, readiness and metrics endpoints, and the log line of each call."""

import copy
import json
import logging

import httpx
import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from console.actions import create_key
from gateway import health
from tests.conftest import free_port, settle_books, within_one_minute
from tests.upstream_fixtures import QUICK, TEST_KEY, fleet_over, wait_for
from upstream.fleet import Fleet, set_fleet
from upstream.nodes import NodeConfig

CHAT = {"model": "mira", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 when there are none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def scrape(base: str, **headers: str) -> str:
    response = httpx.get(f"{base}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_healthz_and_readyz_answer_without_a_key_and_are_not_usage(
    asgi_server, upstream_fleet, alice, acme, settings
):
    _key, secret = create_key(workspace=acme, name="probe", created_by=alice, rpm_limit=1)
    before = scrape(asgi_server.url)
    redis = "ok" if settings.REDIS_URL else "not configured"
    within_one_minute()
    for _ in range(3):
        assert httpx.get(f"{asgi_server.url}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{asgi_server.url}/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ok",
            "checks": {"database": "ok", "redis": redis, "fleet": "ok"},
        }
    # Not counted as calls, nor against a rate limit: the key's one call a minute is left.
    after = scrape(asgi_server.url)
    assert metric(after, "mira_requests_total") == metric(before, "mira_requests_total")
    call = httpx.post(f"{asgi_server.url}/v1/chat/completions", json=CHAT,
                      headers={"x-api-key": secret}, timeout=30)  # fmt: skip
    assert call.status_code == 200
    refused = httpx.post(f"{asgi_server.url}/readyz")
    assert refused.status_code == 405 and "GET" in refused.json()["detail"]


def _on_health_thread(fn):
    return health.executor().submit(fn).result(timeout=30)


def test_readyz_names_the_database_while_it_cannot_be_reached(asgi_server, upstream_fleet):
    url = f"{asgi_server.url}/readyz"
    assert httpx.get(url).status_code == 200
    saved = {}

    def break_connection() -> None:
        # The readiness check's own connection is pointed at a database that is not
        # there (a port nothing listens on; for SQLite, a file in a missing folder).
        saved.update(connection.settings_dict)
        dead = copy.deepcopy(connection.settings_dict)
        if connection.vendor == "sqlite":
            dead["NAME"] = "/nonexistent-folder/mira.sqlite3"
        else:
            dead["HOST"], dead["PORT"] = "127.0.0.1", str(free_port())
        connection.close()
        connection.settings_dict = dead

    def mend_connection() -> None:
        connection.close()
        connection.settings_dict = saved

    _on_health_thread(break_connection)
    try:
        down = httpx.get(url)
        assert down.status_code == 503
        body = down.json()
        assert body["failing"] == ["database"]
        assert body["checks"]["database"] == "unreachable"
        assert body["detail"] == "Not ready: database unreachable."
        assert "nonexistent" not in down.text and "PASSWORD" not in down.text
    finally:
        _on_health_thread(mend_connection)
    assert httpx.get(url).status_code == 200


def test_readyz_names_redis_while_it_is_stopped(
    asgi_server, upstream_fleet, redis_server, settings
):
    settings.REDIS_URL = redis_server.url
    url = f"{asgi_server.url}/readyz"
    ok = httpx.get(url)
    assert ok.status_code == 200 and ok.json()["checks"]["redis"] == "ok"
    redis_server.stop()
    down = httpx.get(url)
    assert down.status_code == 503
    assert down.json()["failing"] == ["redis"]
    assert "redis unreachable" in down.json()["detail"]
    assert redis_server.url not in down.text
    redis_server.start()
    assert wait_for(lambda: httpx.get(url).status_code == 200)


def test_readyz_names_the_fleet_when_every_node_is_ejected(asgi_server, simulator, alice, acme):
    _key, secret = create_key(workspace=acme, name="k", created_by=alice)
    # A node on a port nothing listens on: calls to it fail, and it is ejected.
    dead = Fleet(
        [NodeConfig(name="dead", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key=TEST_KEY)],
        options=QUICK,
    )
    previous = set_fleet(dead)
    try:
        while dead.nodes[0].healthy:
            failed = httpx.post(f"{asgi_server.url}/v1/chat/completions", json=CHAT,
                                headers={"x-api-key": secret}, timeout=30)  # fmt: skip
            assert failed.status_code == 502
        down = httpx.get(f"{asgi_server.url}/readyz")
        assert down.status_code == 503
        assert down.json()["failing"] == ["fleet"]
        assert "fleet has no healthy upstream node (1 ejected)" in down.json()["detail"]
        text = scrape(asgi_server.url)
        assert metric(text, "mira_upstream_node_healthy", node="dead") == 0
        assert metric(text, "mira_upstream_ejections_total", node="dead") == 1
        assert metric(text, "mira_requests_total", product="chat", status="502") >= 1
    finally:
        set_fleet(previous)
    healthy = fleet_over(simulator, names=["simulator"])
    set_fleet(healthy)
    try:
        assert httpx.get(f"{asgi_server.url}/readyz").status_code == 200
        assert metric(scrape(asgi_server.url), "mira_upstream_node_healthy", node="simulator") == 1
    finally:
        set_fleet(previous)


def test_metrics_need_the_token_when_one_is_set(asgi_server, upstream_fleet, settings):
    url = f"{asgi_server.url}/metrics"
    assert httpx.get(url).status_code == 200  # no token: loopback may read them
    settings.METRICS_TOKEN = "scrape-token-1234"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert "METRICS_TOKEN" in missing.json()["detail"]
    assert "scrape-token-1234" not in missing.text
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    good = httpx.get(url, headers={"Authorization": "Bearer scrape-token-1234"})
    assert good.status_code == 200 and "mira_requests_total" in good.text


async def _get_metrics_from(address: str) -> tuple[int, dict]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": [],
             "client": (address, 40000)}  # fmt: skip
    await health.app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


@pytest.mark.django_db
async def test_without_a_token_other_hosts_may_not_read_the_metrics(settings):
    settings.METRICS_TOKEN = ""
    status, body = await _get_metrics_from("203.0.113.9")
    assert status == 403 and "METRICS_TOKEN" in body["detail"]


def test_counters_move_with_calls_and_each_call_logs_one_line(
    asgi_server, upstream_fleet, alice, acme, caplog
):
    caplog.set_level(logging.INFO, logger="mira.calls")
    _key, secret = create_key(workspace=acme, name="metered", created_by=alice)
    base = asgi_server.url
    labels = {"product": "chat", "model": "mira", "status": "200", "source": "api"}
    before = scrape(base)
    headers = {"Authorization": f"Bearer {secret}"}
    plain = httpx.post(f"{base}/v1/chat/completions", json=CHAT, headers=headers, timeout=30)
    assert plain.status_code == 200
    streamed = httpx.post(f"{base}/v1/chat/completions", json=CHAT | {"stream": True},
                          headers=headers, timeout=30)  # fmt: skip
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    wrong = httpx.post(f"{base}/v1/chat/completions", json=CHAT,
                       headers={"Authorization": "Bearer sk-mira-wrong"}, timeout=30)  # fmt: skip
    assert wrong.status_code == 401
    after = scrape(base)

    def moved(name: str, **only: str) -> float:
        return metric(after, name, **only) - metric(before, name, **only)

    assert moved("mira_requests_total", **labels) == 2
    assert moved("mira_requests_total") == 2  # the refused call is not a model call
    assert moved("mira_refused_total", status="401") == 1
    usage = plain.json()["usage"]
    assert moved("mira_tokens_total", product="chat", direction="in") >= usage["prompt_tokens"]
    assert moved("mira_tokens_total", product="chat", direction="out") >= usage["completion_tokens"]
    assert moved("mira_cost_micro_units_total", product="chat", model="mira") > 0
    assert moved("mira_gateway_added_seconds_count", product="chat") == 2
    assert moved("mira_upstream_seconds_count", product="chat") == 2
    assert metric(after, "mira_open_streams") == 0
    # The suite writes bookings only when a test settles them: both calls are waiting.
    assert metric(after, "mira_booking_queue_depth") == 2
    assert metric(after, "mira_journal_lag_seconds") > 0
    settle_books()
    assert metric(scrape(base), "mira_booking_queue_depth") == 0

    lines = [r for r in caplog.records if r.name == "mira.calls"]
    ids = [plain.headers["x-request-id"], streamed.headers["x-request-id"]]
    assert [r.call["request_id"] for r in lines] == ids
    for record in lines:
        text = record.getMessage()
        assert record.call["key_prefix"] == secret[:16]
        assert record.call["workspace_id"] == acme.pk
        assert record.call["status"] == 200 and record.call["cost"] > 0
        assert record.call["node"] == "simulator"
        assert f"key={secret[:16]}" in text and "status=200" in text
    for text in [caplog.text, *(str(r.__dict__) for r in lines)]:
        assert secret not in text and secret[8:] not in text
        assert "bearer" not in text.lower() and "authorization" not in text.lower()


def test_open_streams_and_realtime_sessions_are_counted_while_open(
    asgi_server, start_simulator, alice, acme
):
    from websockets.sync.client import connect

    from gateway.realtime import KEY_SUBPROTOCOL, SUBPROTOCOL

    slow = start_simulator(chunk_delay_ms=100)
    previous = set_fleet(fleet_over(slow, names=["slow"]))
    _key, secret = create_key(workspace=acme, name="k", created_by=alice)
    base = asgi_server.url

    def gauge(name: str) -> float:
        return metric(scrape(base), name)

    try:
        body = CHAT | {"stream": True, "max_tokens": 40}
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body,
                          headers={"x-api-key": secret}, timeout=30) as streamed:  # fmt: skip
            assert streamed.status_code == 200
            lines = streamed.iter_lines()
            next(lines)
            assert gauge("mira_open_streams") == 1
            rest = "".join(lines)
        assert "[DONE]" in rest
        assert wait_for(lambda: gauge("mira_open_streams") == 0, attempts=300)

        url = base.replace("http://", "ws://") + "/v1/realtime"
        with connect(url, subprotocols=[SUBPROTOCOL, KEY_SUBPROTOCOL + secret]) as ws:
            assert json.loads(ws.recv())["type"] == "session.created"
            assert gauge("mira_realtime_sessions") == 1
        assert wait_for(lambda: gauge("mira_realtime_sessions") == 0, attempts=300)
    finally:
        set_fleet(previous)
