"""`manage.py serve`, the production command: two uvicorn workers on one port answer the
official SDKs (chats, streams, messages, embeddings), run a music job to the end with their
own job runners, stop a revoked key on every worker, and on SIGTERM let the calls in flight
finish and write every booking before they exit."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from django.db.models import Sum
from django.test import override_settings

from console import ledger
from console.actions import create_key
from console.models import ApiKey, EntryKind, Hold, LedgerEntry, UsageRecord
from gateway.models import Job
from tests.conftest import free_port
from tests.gateway.test_workers import _database_url
from tests.upstream_fixtures import TEST_KEY, wait_for

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2
IN_FLIGHT = 40


class Serve:
    """`manage.py serve` running in a process of its own."""

    def __init__(self, env: dict) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", str(WORKERS)]  # fmt: skip
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        try:
            while True:
                try:
                    if httpx.get(f"{self.url}/openapi.json", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert self.process.poll() is None, self.process.stdout.read()
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise

    def worker_pids(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()}

    def stop(self) -> str:
        """SIGTERM, as a service manager stops it; what it printed."""
        self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=90)
        return output


@pytest.fixture
def serve(transactional_db, redis_url, tmp_path):
    """Start `manage.py serve` for a simulator; whatever the test does, it is stopped."""
    started: list[Serve] = []

    def start(simulator) -> Serve:
        environ = os.environ | {
            "MIRA_TESTING": "1",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": redis_url,
            "MIRA_API_BASE": simulator.base_url,
            "MIRA_API_KEY": TEST_KEY,
            "LOG_LEVEL": "WARNING",
            "GATEWAY_JOB_RUNNER": "true",
            "GATEWAY_JOB_IDLE_SECONDS": "0.2",
            # Bookings wait in memory (and the journal) until the workers stop.
            "GATEWAY_BOOK_SECONDS": "600",
            "GATEWAY_JOURNAL_DIR": str(tmp_path / "journal"),
        }
        environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        started.append(Serve(environ))
        return started[-1]

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(server.process.pid, signal.SIGKILL)
                server.process.wait()


def test_serve_answers_the_sdks_runs_jobs_revokes_everywhere_and_books_every_call(
    serve, start_simulator, redis_url, alice, acme
):
    simulator = start_simulator(job_seconds=1)
    key, secret = create_key(workspace=acme, name="sdk", created_by=alice)
    start = ledger.balance_of(acme)
    server = serve(simulator)
    assert len(server.worker_pids()) == WORKERS
    try:
        client = openai.OpenAI(base_url=server.url, api_key=secret, max_retries=0)
        claude = anthropic.Anthropic(base_url=server.url.removesuffix("/v1"), api_key=secret,
                                     max_retries=0)  # fmt: skip
        made = []
        for _ in range(3):  # several of each, so that both workers answer some
            reply = client.chat.completions.with_raw_response.create(
                model="mira", messages=[{"role": "user", "content": "hello"}], max_tokens=20
            )
            assert reply.parse().choices[0].message.content
            made.append(reply.headers["x-request-id"])
            with client.chat.completions.with_streaming_response.create(
                model="mira", messages=[{"role": "user", "content": "a story"}], stream=True
            ) as response:
                chunks = [c for c in response.parse() if c.choices and c.choices[0].delta.content]
                assert len(chunks) > 3
                made.append(response.headers["x-request-id"])
            embedded = client.embeddings.with_raw_response.create(
                model="mira-embed", input=["red apples", "green apples"]
            )
            assert len(embedded.parse().data) == 2
            made.append(embedded.headers["x-request-id"])
            message = claude.messages.with_raw_response.create(
                model="mira", max_tokens=50, messages=[{"role": "user", "content": "the sea"}]
            )
            assert message.parse().content[0].text
            made.append(message.headers["x-request-id"])
            with claude.messages.with_streaming_response.create(
                model="mira", max_tokens=80, stream=True,
                messages=[{"role": "user", "content": "tell a story"}],
            ) as response:  # fmt: skip
                events = [e.type for e in response.parse()]
                assert events[0] == "message_start" and events[-1] == "message_stop"
                made.append(response.headers["x-request-id"])

        # A music job, never polled by its caller: the workers' own job runners settle it.
        created = httpx.post(
            f"{server.url}/audio/music", headers={"x-api-key": secret}, timeout=30,
            json={"prompt": "A calm piano piece", "duration_seconds": 2},
        )  # fmt: skip
        assert created.status_code == 200, created.text
        made.append(created.headers["x-request-id"])
        job = Job.objects.get(pk=created.json()["id"])
        assert wait_for(lambda: Job.objects.get(pk=job.pk).status == "succeeded", attempts=1500)

        with override_settings(REDIS_URL=redis_url):
            ApiKey.objects.get(pk=key.pk).revoke()
        time.sleep(1.0)
        for _ in range(8):  # every worker has heard
            with pytest.raises(openai.AuthenticationError):
                client.models.list()
    finally:
        output = server.stop()
    assert server.process.returncode == 0, output
    assert "Stopped: every worker wrote its bookings." in output

    records = UsageRecord.objects.filter(workspace=acme)
    assert sorted(records.values_list("request_id", flat=True)) == sorted(made)
    charges = LedgerEntry.objects.filter(kind=EntryKind.CHARGE)
    assert Counter(charges.values_list("request_id", flat=True)) == Counter(made)
    assert (
        -charges.aggregate(total=Sum("amount"))["total"]
        == records.aggregate(total=Sum("cost"))["total"]
    )
    assert ledger.balance_of(acme) == start - records.aggregate(total=Sum("cost"))["total"]
    assert not Hold.objects.exists()  # every lease and hold given back


def _call(url: str, secret: str, n: int) -> str | None:
    """A chat call, streamed every other time; its request id once wholly answered."""
    body = {"model": "mira", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    headers = {"x-api-key": secret}
    try:
        if n % 2:
            with httpx.stream("POST", f"{url}/chat/completions", json=body | {"stream": True},
                              headers=headers, timeout=60) as response:  # fmt: skip
                text = "".join(response.iter_text())
                complete = response.status_code == 200 and text.rstrip().endswith("[DONE]")
        else:
            response = httpx.post(f"{url}/chat/completions", json=body, headers=headers, timeout=60)
            complete = response.status_code == 200 and response.json()["usage"]
    except httpx.TransportError:
        return None
    return response.headers["x-request-id"] if complete else None


def test_sigterm_mid_traffic_finishes_the_calls_in_flight_and_loses_no_booking(
    serve, start_simulator, alice, acme, tmp_path
):
    # Calls that take a while (answers after five seconds, streams chunk by chunk), so that
    # all of them are in flight at once even on a busy machine.
    simulator = start_simulator(latency_ms=5000, chunk_delay_ms=300)
    _key, plain = create_key(workspace=acme, name="plain", created_by=alice)
    _key, budgeted = create_key(
        workspace=acme, name="budgeted", created_by=alice, monthly_budget=50_000_000
    )
    server = serve(simulator)
    with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
        calls = [
            pool.submit(_call, server.url, (plain, budgeted)[n % 4 // 2], n)
            for n in range(IN_FLIGHT)
        ]
        assert wait_for(lambda: simulator.stats()["open_requests"] >= IN_FLIGHT)
        assert Hold.objects.exists()
        output = server.stop()
        answered = [call.result() for call in calls]
    assert server.process.returncode == 0, output
    # Every call already made was answered in full before the workers went.
    assert None not in answered
    # ...and booked once, with its charge, by the workers on their way out.
    records = dict(UsageRecord.objects.values_list("request_id", "cost"))
    assert sorted(records) == sorted(answered)
    charges = LedgerEntry.objects.filter(kind=EntryKind.CHARGE)
    assert Counter(charges.values_list("request_id", flat=True)) == Counter(answered)
    assert {rid: -amount for rid, amount in charges.values_list("request_id", "amount")} == records
    assert not Hold.objects.exists()
    # Nothing is left for a successor to replay: the journals were discarded once written.
    assert not any(
        path.stat().st_size for path in (tmp_path / "journal").rglob("*") if path.is_file()
    )
    # And the port is closed: nothing serves after the stop.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/openapi.json", timeout=2)


def test_a_worker_that_dies_is_started_again(serve, simulator, alice, acme):
    _key, secret = create_key(workspace=acme, name="plain", created_by=alice)
    server = serve(simulator)
    try:
        first = server.worker_pids()
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        assert wait_for(
            lambda: len(server.worker_pids()) == WORKERS and victim not in server.worker_pids(),
            attempts=3000,
        )
        assert _call(server.url, secret, 0) is not None
    finally:
        output = server.stop()
    assert f"worker {victim} exited (-9): starting another" in output
    assert server.process.returncode == 0, output
