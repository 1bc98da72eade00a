"""A worker killed with SIGKILL loses no booking: the calls it answered are booked once, by
the worker that starts after it, which also returns the credit it held."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from django.db.models import Sum

from console import ledger
from console.actions import create_key
from console.models import EntryKind, Hold, LedgerEntry, UsageRecord, Worker
from tests.conftest import free_port
from tests.gateway.test_workers import _database_url
from tests.upstream_fixtures import TEST_KEY, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "mira", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
IN_FLIGHT = 100


def _serve(port: int, env: dict) -> subprocess.Popen:
    """One console worker process (uvicorn, no supervisor), serving once it answers."""
    command = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/openapi.json", timeout=1).is_success:
                return process
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.1)


def _call(url: str, secret: str, n: int) -> str | None:
    """Make a call, streamed every other time; its request id once it is wholly answered."""
    headers = {"x-api-key": secret}
    try:
        if n % 2:
            with httpx.stream("POST", f"{url}/chat/completions", json=CHAT | {"stream": True},
                              headers=headers, timeout=60) as response:  # fmt: skip
                text = "".join(response.iter_text())
                complete = response.status_code == 200 and text.rstrip().endswith("[DONE]")
        else:
            response = httpx.post(f"{url}/chat/completions", json=CHAT, headers=headers, timeout=60)
            complete = response.status_code == 200 and response.json()["usage"]
    except httpx.TransportError:
        return None
    return response.headers["x-request-id"] if complete else None


def test_a_killed_worker_loses_no_booking_and_its_lease_comes_back(
    transactional_db, start_simulator, alice, acme, tmp_path
):
    simulator = start_simulator()
    _key, plain = create_key(workspace=acme, name="plain", created_by=alice)
    # A key with a budget holds per call in the database, not from the worker's lease.
    _key, budgeted = create_key(
        workspace=acme, name="budgeted", created_by=alice, monthly_budget=50_000_000
    )
    env = os.environ | {
        "MIRA_TESTING": "1",
        "DATABASE_URL": _database_url(),
        "MIRA_API_BASE": simulator.base_url,
        "MIRA_API_KEY": TEST_KEY,
        "LOG_LEVEL": "WARNING",
        # Bookings are written long after the kill: all of them are in the journal only.
        "GATEWAY_BOOK_SECONDS": "600",
        "GATEWAY_JOURNAL_DIR": str(tmp_path),
    }
    env.pop("REDIS_URL", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    worker = _serve(port, env)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            calls = [(secret, n) for n in range(20) for secret in (plain, budgeted)]
            answered = list(pool.map(lambda c: _call(url, *c), calls))
        assert None not in answered
        # The first call after a quiet spell is written at once; the others wait for the
        # next batch, which comes after the kill: they are in the journal only.
        assert UsageRecord.objects.count() < len(answered) / 2

        simulator.settings.latency_ms = 60_000  # from now on, calls stay in flight
        with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            in_flight = [
                pool.submit(_call, url, (plain, budgeted)[n % 4 // 2], n) for n in range(IN_FLIGHT)
            ]
            assert wait_for(lambda: simulator.stats()["open_requests"] >= IN_FLIGHT)
            assert Hold.objects.exists()
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            assert [call.result() for call in in_flight] == [None] * IN_FLIGHT
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    assert Hold.objects.exists()  # the dead worker's lease and the holds of its calls
    restarted = _serve(port, env)
    try:
        assert wait_for(lambda: not Hold.objects.exists(), attempts=3000)
    finally:
        restarted.terminate()
        restarted.wait(timeout=20)

    records = dict(UsageRecord.objects.values_list("request_id", "cost"))
    assert sorted(records) == sorted(answered)
    charges = LedgerEntry.objects.filter(kind=EntryKind.CHARGE)
    assert Counter(charges.values_list("request_id", flat=True)) == Counter(answered)
    assert {rid: -amount for rid, amount in charges.values_list("request_id", "amount")} == records
    assert all(cost > 0 for cost in records.values())
    total = LedgerEntry.objects.filter(workspace=acme).aggregate(s=Sum("amount"))["s"]
    assert ledger.balance_of(acme) == total > 0
    assert not list(tmp_path.iterdir())  # the journal was replayed and removed
    assert not Worker.objects.exclude(pk__in=[]).filter(pid=worker.pid).exists()
