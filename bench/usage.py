"""`python -m bench.usage`: the usage page and its CSV export over a large history.

It makes a throwaway SQLite database, fills the demo workspace with `--records`
synthetic calls (1,000,000 by default, through `manage.py seedusage`), then requests
the usage page (the default view, 90 days, and a filtered view) and the CSV export
through Django's test client in this process, several times each, and prints the
p50 and the slowest. The database is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 300


def _environment(database: Path) -> dict[str, str]:
    return os.environ | {
        "DATABASE_URL": f"sqlite:///{database}",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records", type=int, default=int(os.environ.get("BENCH_USAGE_RECORDS", 1_000_000))
    )
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=9)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mira-bench-usage-") as folder:
        database = Path(folder) / "usage.sqlite3"
        env = _environment(database)
        print(
            f"Seeding {options.records:,} usage records over {options.days} days (a few minutes for a million)…"
        )
        started = time.monotonic()
        _manage(env, "migrate", "--noinput")
        _manage(env, "collectstatic", "--noinput")
        _manage(env, "demo")
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
        print(f"seeded in {time.monotonic() - started:.0f} s")

        os.environ.update(env)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        sys.path.insert(0, str(ROOT))
        import warnings

        import django

        # Static files are not collected for this run; the page's HTML is what is timed.
        warnings.filterwarnings("ignore", message="No directory at")
        django.setup()
        from django.test import Client

        from accounts.models import User

        client = Client()
        client.force_login(User.objects.get(email="demo@example.com"))
        pages = [
            ("usage page, last 30 days", "/w/demo/usage/"),
            ("usage page, 90 days by product", "/w/demo/usage/?range=90d&group=product"),
            ("usage page, one model", "/w/demo/usage/?range=30d&model=mira-pro"),
            ("CSV export, last 30 days", "/w/demo/usage/export.csv"),
            ("CSV export, 90 days", "/w/demo/usage/export.csv?range=90d"),
        ]
        print(f"\n{'request':34} {'p50 ms':>8} {'max ms':>8}")
        for label, url in pages:
            p50, worst = _time(client, url, options.repeat)
            print(f"{label:34} {p50:8.1f} {worst:8.1f}")
        print(f"\nTarget for the usage page: p50 under {TARGET_MS} ms with 1,000,000 records.")


if __name__ == "__main__":
    main()
