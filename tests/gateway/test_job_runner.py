"""The job runner: a job nobody polls is kept and settled soon after its node finishes it; a
runner killed mid-job leaves it to the next, which settles it once (after a dead runner's
claim expires); two runner processes at once on one database settle every job exactly once."""

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from console import ledger
from console.models import EntryKind, Hold, LedgerEntry, UsageRecord
from gateway import job_runner
from gateway.models import Job, StoredFile
from tests.gateway.test_workers import _database_url
from tests.upstream_fixtures import TEST_KEY, wait_for

ROOT = Path(__file__).resolve().parents[2]


def start_job(console_url: str, key: str, seconds: str = "1", **body) -> Job:
    response = httpx.post(
        f"{console_url}/audio/music",
        json={"prompt": "a tune nobody waits for", "duration_seconds": 2} | body,
        headers={"x-api-key": key, "x-sim-job-seconds": seconds},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return Job.objects.get(pk=response.json()["id"])


def settled(job: Job) -> bool:
    return Job.objects.filter(pk=job.pk, settled_at__isnull=False).exists()


def assert_settled_once(job: Job) -> UsageRecord:
    """One usage record, one hold, one release and at most one charge: the job's hold gone."""
    job.refresh_from_db()
    [record] = UsageRecord.objects.filter(request_id=job.request_id)
    kinds = sorted(
        LedgerEntry.objects.filter(request_id=job.request_id).values_list("kind", flat=True)
    )
    expected = [EntryKind.CHARGE, EntryKind.HOLD, EntryKind.RELEASE] if record.cost else [
        EntryKind.HOLD, EntryKind.RELEASE]  # fmt: skip
    assert kinds == sorted(expected)
    assert not Hold.objects.filter(request_id=job.request_id).exists()
    assert record.cost == job.cost
    return record


@pytest.fixture
def runner(upstream_fleet):
    """The runner a serving worker runs, in this process."""
    running = job_runner.Runner(interval=0.05).start()
    yield running
    running.stop()


@pytest.fixture
def run_jobs(simulator, tmp_path):
    """Start `manage.py runjobs` processes on the test database, the simulator its one node."""
    fleet_file = tmp_path / "fleet.json"
    fleet_file.write_text(
        json.dumps([{"name": "simulator", "base_url": simulator.base_url, "api_key": TEST_KEY}])
    )
    started: list[subprocess.Popen] = []

    def start(**env: str) -> subprocess.Popen:
        environment = (
            os.environ
            | {
                "MIRA_TESTING": "1",
                "DATABASE_URL": _database_url(),
                "MIRA_FLEET_FILE": str(fleet_file),
                "MEDIA_ROOT": str(settings.MEDIA_ROOT),
                "GATEWAY_JOB_IDLE_SECONDS": "0.05",
                "GATEWAY_JOB_POLL_MAX_SECONDS": "0.3",
                "LOG_LEVEL": "WARNING",
            }
            | env
        )
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runjobs"], cwd=ROOT, env=environment
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)


def test_a_job_nobody_polls_is_kept_and_settled_within_seconds_of_its_end(
    console_url, api_key, acme, runner
):
    start = ledger.balance_of(acme)
    job = start_job(console_url, api_key, seconds="1")
    # The node finishes it after a second; the runner polls soon, and less often later.
    assert wait_for(lambda: settled(job), attempts=1000)
    record = assert_settled_once(job)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.file is not None
    assert StoredFile.objects.get(pk=job.file_id).content_type == "audio/wav"
    assert record.units == {"music_second": 2} and record.cost > 0
    assert ledger.balance_of(acme) == start - record.cost
    # The caller who comes back later finds it done, with its file.
    later = httpx.get(f"{console_url}/audio/music/{job.pk}", headers={"x-api-key": api_key})
    assert later.json()["status"] == "succeeded"
    assert httpx.get(later.json()["audio_url"]).status_code == 200


def test_a_failed_job_nobody_polls_releases_its_hold(console_url, api_key, acme, runner):
    start = ledger.balance_of(acme)
    job = start_job(console_url, api_key, seconds="0.5", prompt="a tune [fail]")
    assert wait_for(lambda: settled(job), attempts=1000)
    record = assert_settled_once(job)
    assert record.cost == 0 and Job.objects.get(pk=job.pk).status == "failed"
    assert ledger.balance_of(acme) == start


def test_a_runner_killed_mid_job_leaves_it_to_the_next_which_settles_it_once(
    console_url, api_key, acme, run_jobs, simulator
):
    start = ledger.balance_of(acme)
    # A job that runs until the test ends it, however long the runner takes to start.
    job = start_job(console_url, api_key, seconds="3600")
    first = run_jobs()
    assert wait_for(lambda: Job.objects.get(pk=job.pk).polls >= 2, attempts=3000)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert not settled(job)
    simulator.app.jobs.jobs[job.upstream_id].seconds = 0.0
    # As if it had died in the middle of a step: its claim holds the job a while yet.
    claimed_until = timezone.now() + timedelta(seconds=1.5)
    Job.objects.filter(pk=job.pk).update(claimed_by="jobs-dead", claimed_until=claimed_until)

    run_jobs()
    assert wait_for(lambda: settled(job), attempts=2000)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.settled_at >= claimed_until
    record = assert_settled_once(job)
    assert StoredFile.objects.filter(request_id=job.request_id).count() == 1
    assert ledger.balance_of(acme) == start - record.cost


def test_two_runners_at_once_settle_every_job_exactly_once(console_url, api_key, acme, run_jobs):
    start = ledger.balance_of(acme)
    jobs = [start_job(console_url, api_key, seconds="1") for _ in range(6)]
    jobs.append(start_job(console_url, api_key, seconds="1", prompt="a tune [fail]"))
    # Claims that expire at once: both runners work on the same jobs, and race to settle.
    runners = [run_jobs(GATEWAY_JOB_CLAIM_SECONDS="0.001") for _ in range(2)]
    assert wait_for(lambda: all(settled(job) for job in jobs), attempts=3000)
    assert all(process.poll() is None for process in runners)
    costs = [assert_settled_once(job).cost for job in jobs]
    assert costs.count(0) == 1
    for job in jobs[:-1]:
        # A runner that lost the race removes the copy it made once its settling found
        # the job settled: then one file is left, the job's own.
        files = StoredFile.objects.filter(request_id=job.request_id)
        assert wait_for(lambda files=files: files.count() == 1, attempts=1000)
        assert files.get().pk == job.file_id
    assert UsageRecord.objects.filter(product="music").count() == len(jobs)
    charges = LedgerEntry.objects.filter(kind=EntryKind.CHARGE).aggregate(s=Sum("amount"))["s"]
    assert -charges == sum(costs)
    assert ledger.balance_of(acme) == start - sum(costs)


def test_a_job_never_accepted_upstream_is_failed_after_its_grace_and_its_hold_returned(
    transactional_db, upstream_fleet, alice, acme
):
    from asgiref.sync import async_to_sync

    from gateway import jobs, pipeline

    start = ledger.balance_of(acme)
    caller = pipeline.as_member(workspace_id=acme.pk, user_id=alice.pk)
    job = jobs._open(
        caller, kind="video", request_id="req_lost", endpoint="/v1/video", model="",
        params={"prompt": "lost"}, seconds=5,
    )  # fmt: skip
    assert Hold.objects.get(request_id="req_lost").amount == job.held > 0
    runner = job_runner.Runner()
    assert async_to_sync(runner.run_once)() == 0  # its request may still be waiting for the node
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=3))
    assert async_to_sync(runner.run_once)() == 1
    job.refresh_from_db()
    assert job.status == "failed" and "never accepted" in job.error
    assert assert_settled_once(job).cost == 0
    assert ledger.balance_of(acme) == start


def test_a_job_whose_node_stops_answering_fails_once_the_runner_gives_up(
    console_url, api_key, acme, start_simulator, make_fleet, settings
):
    from upstream.fleet import get_fleet, set_fleet

    start = ledger.balance_of(acme)
    server = start_simulator(job_seconds=30)
    previous = set_fleet(make_fleet(server, names=["simulator"]))
    try:
        job = start_job(console_url, api_key, seconds="30")
        server.stop()
        settings.GATEWAY_JOB_GIVE_UP_SECONDS = 0
        answer = httpx.get(
            f"{console_url}/audio/music/{job.pk}", headers={"x-api-key": api_key}, timeout=30
        ).json()
    finally:
        set_fleet(previous)
    assert get_fleet() is previous
    assert answer["status"] == "failed" and "did not answer" in answer["error"]
    assert assert_settled_once(job).cost == 0
    assert ledger.balance_of(acme) == start
