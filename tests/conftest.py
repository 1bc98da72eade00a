"""Shared fixtures: the named personas and a live ASGI server for browser and SDK tests."""

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from django.db.models import Sum
from django.test import Client

from accounts.models import Membership, User, Workspace
from accounts.roles import Role

pytest_plugins = ["tests.upstream_fixtures", "tests.fetch_fixtures"]

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="session", autouse=True)
def _close_database_threads(django_db_setup, django_db_blocker):
    """The gateway's database threads keep connections open; close them before the test
    database is dropped (PostgreSQL refuses to drop a database that is in use)."""
    yield
    from django.db import connection

    from console import books, db

    books.forget()
    db.close_all()
    if connection.vendor == "postgresql":
        # Threads of the live servers and consumers may still hold a session.
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(scope="session", autouse=True)
def _remove_this_runs_folders():
    """The media and journal folders of this test process (settings name them after its
    pid, in the temporary folder) go when the run ends."""
    yield
    from django.conf import settings

    for folder in (settings.MEDIA_ROOT, settings.GATEWAY_JOURNAL_DIR):
        if folder.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _forget_books():
    """Each test starts with no worker leases or queued bookings of an earlier test."""
    yield
    from console import aliases, books

    books.forget()
    aliases.forget_all()


def settle_books() -> None:
    """Write the calls the gateway has booked and give back its leases of credit.

    The gateway writes bookings in the background and holds credit in leases; a test
    that reads usage records, the ledger or a balance after calls first settles them.
    """
    from console import books

    books.drain()


def book_calls() -> None:
    """Write the calls the gateway has booked, as its timer does: its leases of credit
    stay held (`settle_books` gives them back too)."""
    from console import books, db

    db.submit(books.flush).result()


def tiny_call_with_the_lease_held(base_url: str, secret: str) -> tuple[int, int]:
    """A chat call of a few tokens through /v1, written to the books while the worker
    still holds its lease of credit (about a tenth of the balance); (its charge, what
    the workspace's holds set aside)."""
    import httpx

    from console.models import Hold, UsageRecord

    response = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": "mira", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        headers={"x-api-key": secret},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    book_calls()
    record = UsageRecord.objects.get(request_id=response.headers["x-request-id"])
    held = Hold.objects.filter(workspace_id=record.workspace_id).aggregate(s=Sum("amount"))["s"]
    assert 0 < record.cost < 100 and held > record.cost
    return record.cost, held


def usage_records():
    """The usage records, once the bookings the gateway has queued are written."""
    from console.models import UsageRecord

    settle_books()
    return UsageRecord.objects


def make_user(email: str, name: str = "") -> User:
    return User.objects.create_user(email=email, password=PASSWORD, name=name)


ACME_CREDIT = 100 * 1_000_000  # $100 in micro-units


def seed_prices() -> None:
    """The default prices, as the data migration leaves them (transactional tests flush them)."""
    from console.models import Price
    from console.pricing import DEFAULT_PRICES, forget_prices

    if not Price.objects.exists():
        Price.objects.bulk_create(
            Price(product=p, model=m, unit=u, variant=v, amount=a, per=per)
            for p, m, u, v, a, per in DEFAULT_PRICES
        )
    forget_prices()


@pytest.fixture
def acme(db) -> Workspace:
    """Alice's workspace, where most tests happen; it starts with $100 of credit."""
    from console import ledger

    seed_prices()
    workspace = Workspace.objects.create(name="Acme", slug="acme")
    ledger.grant(workspace=workspace, amount=ACME_CREDIT, note="test credit", by=None)
    return workspace


@pytest.fixture
def globex(db) -> Workspace:
    """Charlie's workspace: nothing in it may leak into Acme's pages, nor Acme's into it."""
    return Workspace.objects.create(name="Globex", slug="globex")


@pytest.fixture
def alice(acme) -> User:
    """Owner of Acme: may do everything there."""
    user = make_user("alice@example.com", "Alice Archer")
    Membership.objects.create(user=user, workspace=acme, role=Role.OWNER)
    return user


@pytest.fixture
def bob(acme) -> User:
    """Developer in Acme: builds with models and keys, cannot manage people or billing."""
    user = make_user("bob@example.com", "Bob Baker")
    Membership.objects.create(user=user, workspace=acme, role=Role.DEVELOPER)
    return user


@pytest.fixture
def charlie(globex) -> User:
    """Owner of Globex, a stranger to Acme: must see nothing of Alice's."""
    user = make_user("charlie@example.com", "Charlie Chen")
    Membership.objects.create(user=user, workspace=globex, role=Role.OWNER)
    return user


@pytest.fixture
def member_of_acme(acme):
    """Make a member of Acme with a given role (for walking the whole role table)."""

    def make(role: str) -> User:
        user = make_user(f"{role}@example.com", role.title())
        Membership.objects.create(user=user, workspace=acme, role=role)
        return user

    return make


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


@pytest.fixture
def alice_client(alice) -> Client:
    return signed_in(alice)


@pytest.fixture
def bob_client(bob) -> Client:
    return signed_in(bob)


@pytest.fixture
def charlie_client(charlie) -> Client:
    return signed_in(charlie)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    server: uvicorn.Server


def _serve_in_thread(app, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.02)
    return server, thread


@pytest.fixture
def asgi_server(transactional_db) -> Iterator[LiveServer]:
    """The whole console (HTTP and websockets) served over a real socket."""
    from django.core.cache import cache

    from config.asgi import application

    # Each test starts as a fresh server would: allauth's sign-in rate limit counts per
    # address, and every browser test signs in from 127.0.0.1.
    cache.clear()

    port = free_port()
    server, thread = _serve_in_thread(application, port)
    yield LiveServer(url=f"http://127.0.0.1:{port}", server=server)
    server.should_exit = True
    thread.join(timeout=10)


class RedisServer:
    """A redis-server of a test's own, on loopback, that the test may stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        server = shutil.which("redis-server")
        assert server, "redis-server is needed: `make test` installs it"
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The configured Redis, or a private redis-server for the session."""
    from django.conf import settings

    if settings.REDIS_URL:
        yield settings.REDIS_URL
        return
    server = RedisServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for a test that stops it."""
    server = RedisServer().start()
    yield server
    server.stop()


def within_one_minute() -> None:
    """Wait for the next minute when this one is nearly over: rate limits count per
    calendar minute, and calls on both sides of its end would count in two windows."""
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.1)
