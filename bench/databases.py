"""The database and Redis a benchmark runs on.

By default a throwaway SQLite file in the benchmark's folder and in-process caches (or the
`REDIS_URL` of the environment). With `BENCH_DB=postgres`, PostgreSQL and Redis: the
`DATABASE_URL` (a `postgres://` one) and `REDIS_URL` of the environment when given,
otherwise a throwaway PostgreSQL cluster (initdb, pg_ctl; as the `postgres` user when run
as root, which PostgreSQL refuses to run as) and a redis-server, each on a free loopback
port, started here as CI starts them and removed afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.servers import HOST, ServerError, free_port


@dataclass
class Databases:
    database_url: str
    redis_url: str
    description: str


def wanted() -> str:
    kind = os.environ.get("BENCH_DB", "sqlite").strip().lower() or "sqlite"
    if kind not in ("sqlite", "postgres"):
        raise SystemExit(f"BENCH_DB must be sqlite or postgres, not {kind!r}")
    return kind


def _run(command: list[str], as_postgres: bool) -> None:
    if as_postgres:
        command = ["su", "postgres", "-c", " ".join(command)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode:
        raise ServerError(f"{command[0]} failed: {result.stderr[-2000:] or result.stdout[-2000:]}")


@contextlib.contextmanager
def databases(workdir: Path) -> Iterator[Databases]:
    """The database URL and Redis URL for the console, started here when needed."""
    redis_env = os.environ.get("REDIS_URL", "")
    if wanted() == "sqlite":
        shared = "Redis (REDIS_URL)" if redis_env else "in-process"
        yield Databases(f"sqlite:///{workdir / 'bench.sqlite3'}", redis_env,
                        f"SQLite (temporary), shared state {shared}")  # fmt: skip
        return
    given = os.environ.get("DATABASE_URL", "")
    with contextlib.ExitStack() as stack:
        if given.startswith(("postgres://", "postgresql://")):
            database_url = given
            where = "PostgreSQL (DATABASE_URL)"
        else:
            database_url = stack.enter_context(_postgres())
            where = "PostgreSQL (temporary, fsync off)"
        if redis_env:
            redis_url, shared = redis_env, "Redis (REDIS_URL)"
        else:
            redis_url, shared = stack.enter_context(_redis()), "Redis (temporary)"
        yield Databases(database_url, redis_url, f"{where}, shared state {shared}")


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        raise ServerError(
            "BENCH_DB=postgres needs PostgreSQL's initdb (apt-get install postgresql)"
        )
    pg_ctl = str(Path(initdb).with_name("pg_ctl"))
    as_postgres = os.geteuid() == 0
    folder = Path(tempfile.mkdtemp(prefix="mira-bench-pg-"))
    if as_postgres:
        shutil.chown(folder, "postgres")
    port = free_port()
    data = folder / "data"
    options = (f"-p {port} -k {folder} -c listen_addresses={HOST} -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
               "-c shared_buffers=512MB")  # fmt: skip
    try:
        _run([initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], as_postgres)
        _run([pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w", "-o", f"'{options}'",
              "start"] if as_postgres else
             [pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w", "-o", options, "start"],
             as_postgres)  # fmt: skip
        try:
            yield f"postgres://postgres@{HOST}:{port}/postgres"
        finally:
            with contextlib.suppress(ServerError):
                _run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], as_postgres)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _redis() -> Iterator[str]:
    server = shutil.which("redis-server")
    if not server:
        raise ServerError("BENCH_DB=postgres needs redis-server (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(  # noqa: S603
        [server, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import redis

        client = redis.Redis(host=HOST, port=port)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            import time

            time.sleep(0.05)
        yield f"redis://{HOST}:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _version(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in Path(path).parts[-3].split(".") if part.isdigit())
