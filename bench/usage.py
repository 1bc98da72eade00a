"""`python -m bench.usage`: the usage page and its CSV export over a large history.

It makes a throwaway SQLite database (with `BENCH_DB=postgres`, PostgreSQL: see
bench/databases.py), fills the demo workspace with `--records` synthetic calls
(1,000,000 by default, through `manage.py seedusage`, which writes with COPY on
PostgreSQL), then requests the usage page (the default view of 30 days, 90 days, and a
filtered view), the CSV export, `GET /v1/usage` with an admin key and the dashboard
through Django's test client in this process, several times each, and prints the p50
and the slowest. The database is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from bench.databases import Databases, databases

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 300
TARGET_POSTGRES_MS = 100


def _environment(dbs: Databases) -> dict[str, str]:
    return os.environ | {
        "DATABASE_URL": dbs.database_url,
        "REDIS_URL": dbs.redis_url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "false",
        "ALLOWED_HOSTS": "testserver,127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "DEMO_PASSWORD": secrets.token_urlsafe(12),
        "SECURE_SSL_REDIRECT": "false",
    }


def _manage(env: dict[str, str], *args: str) -> None:
    command = [sys.executable, "manage.py", *args]  # our own fixed commands
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)  # noqa: S603


def _time(client, url: str, repeat: int) -> tuple[float, float]:
    client.get(url)  # warm caches and the page's queries once
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
    return statistics.median(times), max(times)


async def _time_api(url: str, secret: str, repeat: int) -> tuple[float, float]:
    """`_time` for the /v1 API, which the gateway's own ASGI handler serves."""
    import httpx

    from gateway.asgi import GatewayHandler

    transport = httpx.ASGITransport(app=GatewayHandler())
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.get(url, headers=headers)
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = await client.get(url, headers=headers)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}: {response.text}")
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records", type=int, default=int(os.environ.get("BENCH_USAGE_RECORDS", 1_000_000))
    )
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=9)
    options = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="mira-bench-usage-") as folder,
        databases(Path(folder)) as dbs,
    ):
        env = _environment(dbs)
        print(f"database: {dbs.description}")
        _manage(env, "migrate", "--noinput")
        _manage(env, "collectstatic", "--noinput")
        _manage(env, "demo")
        print(f"Seeding {options.records:,} usage records over {options.days} days…")
        started = time.monotonic()
        _manage(
            env,
            "seedusage",
            "--records",
            str(options.records),
            "--days",
            str(options.days),
            "--seed",
            "7",
        )
        seconds = time.monotonic() - started
        print(f"seeded in {seconds:.0f} s ({options.records / seconds:,.0f} records/s)")

        os.environ.update(env)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        sys.path.insert(0, str(ROOT))
        import warnings

        import django

        # Static files are not collected for this run; the page's HTML is what is timed.
        warnings.filterwarnings("ignore", message="No directory at")
        django.setup()
        from django.test import Client

        from accounts.models import User, Workspace
        from console.actions import create_key
        from console.models import ADMIN_SCOPE, PRODUCT_SCOPES

        client = Client()
        client.force_login(User.objects.get(email="demo@example.com"))
        _key, secret = create_key(
            workspace=Workspace.objects.get(slug="demo"), name="bench admin", created_by=None,
            scopes=[*PRODUCT_SCOPES, ADMIN_SCOPE],
        )  # fmt: skip
        today = date.today()
        month = f"start_date={today - timedelta(days=29)}&end_date={today}"
        pages = [
            ("dashboard", "/w/demo/"),
            ("usage page, last 30 days", "/w/demo/usage/"),
            ("usage page, 90 days by product", "/w/demo/usage/?range=90d&group=product"),
            ("usage page, one model", "/w/demo/usage/?range=30d&model=mira-pro"),
            ("CSV export, last 30 days", "/w/demo/usage/export.csv"),
            ("CSV export, 90 days", "/w/demo/usage/export.csv?range=90d"),
        ]
        api = [
            ("/v1/usage, 30 days by day", f"/v1/usage?{month}"),
            ("/v1/usage, 30 days by model", f"/v1/usage?{month}&group_by=model"),
        ]
        print(f"\n{'request':34} {'p50 ms':>8} {'max ms':>8}")
        for label, url in pages:
            p50, worst = _time(client, url, options.repeat)
            print(f"{label:34} {p50:8.1f} {worst:8.1f}")
        for label, url in api:
            p50, worst = asyncio.run(_time_api(url, secret, options.repeat))
            print(f"{label:34} {p50:8.1f} {worst:8.1f}")
        print(
            f"\nTarget for the usage page: p50 under {TARGET_MS} ms with 1,000,000 records on "
            f"SQLite, under {TARGET_POSTGRES_MS} ms for 30 days with 10,000,000 on PostgreSQL."
        )


if __name__ == "__main__":
    main()
