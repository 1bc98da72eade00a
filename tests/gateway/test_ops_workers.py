"""Two worker processes: /metrics of either reports what both answered (prometheus-client's
multi-process mode), and with LOG_FORMAT=json each call logs one JSON line to stderr."""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from console.actions import create_key
from tests.conftest import free_port
from tests.gateway.test_ops import metric
from tests.gateway.test_workers import ROOT, _database_url
from tests.upstream_fixtures import TEST_KEY, wait_for

CHAT = {"model": "mira", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture
def metered_workers(transactional_db, simulator, redis_url, tmp_path):
    """The console served by two uvicorn workers sharing Redis and a metrics directory,
    logging JSON at INFO to a file (their stderr)."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stderr = tmp_path / "stderr.log"
    env = os.environ | {
        "MIRA_TESTING": "1",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": redis_url,
        "MIRA_API_BASE": simulator.base_url,
        "MIRA_API_KEY": TEST_KEY,
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    command = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "2", "--log-level", "warning"]  # fmt: skip
    with stderr.open("wb") as err:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=err)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.1)
    yield base, metrics_dir, stderr
    process.terminate()
    process.wait(timeout=20)


def test_either_workers_metrics_add_up_both_and_calls_log_json(metered_workers, alice, acme):
    base, metrics_dir, stderr = metered_workers
    _key, secret = create_key(workspace=acme, name="shared", created_by=alice)

    def call(_) -> httpx.Response:
        return httpx.post(f"{base}/v1/chat/completions", json=CHAT,
                          headers={"Authorization": f"Bearer {secret}"}, timeout=30)  # fmt: skip

    answers: list[httpx.Response] = []
    # Until both workers have answered some (each writes counters of its own once it
    # has counted a call, within a fraction of a second).
    for _ in range(10):
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers += pool.map(call, range(24))
        if wait_for(lambda: len(list(metrics_dir.glob("counter_*.db"))) == 2, attempts=100):
            break
    assert {a.status_code for a in answers} == {200}
    assert len(list(metrics_dir.glob("counter_*.db"))) == 2
    labels = {"product": "chat", "model": "mira", "status": "200", "source": "api"}
    total = len(answers)

    def counted() -> float:
        return metric(
            httpx.get(f"{base}/metrics", timeout=30).text, "mira_requests_total", **labels
        )

    # A scrape, which lands on either worker (a new connection each), reports every call.
    assert wait_for(lambda: counted() == total, attempts=500)
    for _ in range(6):
        text = httpx.get(f"{base}/metrics", timeout=30).text
        assert metric(text, "mira_requests_total", **labels) == total
        assert metric(text, "mira_gateway_added_seconds_count", product="chat") == total

    ids = {a.headers["x-request-id"] for a in answers}
    deadline = time.monotonic() + 10
    while True:
        output = stderr.read_text()
        logged = [
            json.loads(line)
            for line in output.splitlines()
            if line.startswith("{") and '"mira.calls"' in line
        ]
        if len(logged) >= total or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {entry["request_id"] for entry in logged} == ids
    for entry in logged:
        assert entry["level"] == "INFO" and entry["logger"] == "mira.calls"
        assert entry["key_prefix"] == secret[:16] and entry["workspace_id"] == acme.pk
        assert entry["product"] == "chat" and entry["status"] == 200
        assert entry["latency_ms"] >= 0 and entry["node"]
    assert secret not in output and secret[8:] not in output
    assert "Bearer" not in output
