"""`manage.py serve`: the console in production, in one command.

A small supervisor binds the listening socket once and starts N worker processes that
share it, each a uvicorn server (uvloop, httptools, no access log) running
`config.asgi:application`, which starts that worker's background booking writer and its
job runner (`GATEWAY_JOB_RUNNER`; claims are safe with several runners). The kernel
hands each new connection to one of the workers. Settings come from the environment as
everywhere else: `DATABASE_URL`, `REDIS_URL`, `SECRET_KEY` and the rest.

SIGTERM (or Ctrl+C) stops it gracefully: the supervisor passes the signal to every
worker, each stops accepting connections, lets the calls in flight finish (up to
`--graceful-seconds`, after which they are cancelled and booked as cancelled), stops its
job runner, writes every queued booking and gives its unused credit back, then exits;
the supervisor exits once all have. A worker that dies is started again: its successor
books what the journal of the dead one held.

Workers get `PROMETHEUS_MULTIPROC_DIR`, a fresh empty folder made for this run and
removed at exit, unless the environment already names one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

RESTART_PAUSE = 1.0  # seconds before a dead worker is started again
STARTUP_SECONDS = 10.0  # a worker that fails sooner than this cannot start: give up


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Command(BaseCommand):
    help = (
        "Serve the console in production: N uvicorn workers (uvloop, httptools) on one "
        "port, each with its job runner; SIGTERM stops them after writing every booking."
    )
    requires_system_checks = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")),
            help="worker processes (default: WEB_CONCURRENCY, else 2)",
        )  # fmt: skip
        parser.add_argument(
            "--graceful-seconds", type=float, default=30.0,
            help="how long a stopping worker lets calls in flight finish (default 30)",
        )  # fmt: skip
        parser.add_argument(
            "--forwarded-allow-ips", default=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
            help="proxies whose X-Forwarded-For and X-Forwarded-Proto are trusted",
        )  # fmt: skip
        parser.add_argument("--worker-fd", type=int, default=None, help=argparse_hidden())

    def handle(self, *args, **options) -> None:
        if options["worker_fd"] is not None:
            self._worker(options)
            return
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        _Supervisor(self, options).run()

    # ---------- one worker ----------

    def _worker(self, options: dict) -> None:
        import uvicorn

        # uvicorn raises the stopping signal again once it has shut down, to end the
        # process with it: ignored here, so that the books are written below instead.
        signal.signal(signal.SIGTERM, lambda *_: None)
        signal.signal(signal.SIGINT, lambda *_: None)
        sock = socket.socket(fileno=options["worker_fd"])
        config = uvicorn.Config(
            "config.asgi:application",
            loop="uvloop",
            http="httptools",
            lifespan="off",
            access_log=False,
            proxy_headers=True,
            forwarded_allow_ips=options["forwarded_allow_ips"],
            timeout_graceful_shutdown=options["graceful_seconds"],
            log_level=settings.LOGGING["root"]["level"].lower(),
        )
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
        from console import books
        from gateway import job_runner

        job_runner.stop()
        books.stop()


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


class _Supervisor:
    """Starts the workers, starts again any that dies, and stops them all on a signal."""

    def __init__(self, command: Command, options: dict) -> None:
        self.command = command
        self.options = options
        self.stopping = False
        self.workers: list[subprocess.Popen] = []
        self.metrics_dir: str | None = None
        self.started: dict[int, float] = {}

    def run(self) -> None:
        host, port = self.options["host"], self.options["port"]
        sock = _bind(host, port)
        env = dict(os.environ)
        if not env.get("PROMETHEUS_MULTIPROC_DIR"):
            self.metrics_dir = tempfile.mkdtemp(prefix="mira-metrics-")
            env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        count = self.options["workers"]
        self.command.stdout.write(
            f"Serving the console at http://{host}:{port} with {count} "
            f"worker{'s' if count != 1 else ''} (pid {os.getpid()}); SIGTERM stops it.",
        )
        self.command.stdout.flush()
        try:
            self.workers = [self._start(sock, env) for _ in range(count)]
            while not self.stopping:
                for index, worker in enumerate(self.workers):
                    if worker.poll() is not None and not self.stopping:
                        young = time.monotonic() - self.started[worker.pid] < STARTUP_SECONDS
                        if young and worker.returncode > 0:  # an error, not a signal
                            self.command.stderr.write(
                                f"worker {worker.pid} exited ({worker.returncode}) as it "
                                "started: stopping (see its error above)"
                            )
                            self._stop(signal.SIGTERM, None)
                            break
                        self.command.stderr.write(
                            f"worker {worker.pid} exited ({worker.returncode}): starting another"
                        )
                        time.sleep(RESTART_PAUSE)
                        if not self.stopping:
                            self.workers[index] = self._start(sock, env)
                time.sleep(0.2)
            sock.close()
            for worker in self.workers:
                worker.wait()
        finally:
            for worker in self.workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
            if self.metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
        # A worker stopped before it was serving ends by the signal itself, with nothing
        # to write: only errors, and other signals, are failures.
        failed = [w.returncode for w in self.workers if w.returncode not in (0, -signal.SIGTERM)]
        self.command.stdout.write(
            "Stopped: every worker wrote its bookings."
            if not failed
            else f"Stopped; {len(failed)} worker(s) exited with an error."
        )
        if failed:
            sys.exit(1)

    def _start(self, sock: socket.socket, env: dict) -> subprocess.Popen:
        fd = sock.fileno()
        command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "serve", "--worker-fd", str(fd),
                   "--graceful-seconds", str(self.options["graceful_seconds"]),
                   "--forwarded-allow-ips", self.options["forwarded_allow_ips"]]  # fmt: skip
        worker = subprocess.Popen(command, env=env, pass_fds=(fd,))  # noqa: S603
        self.started[worker.pid] = time.monotonic()
        return worker

    def _stop(self, signum, _frame) -> None:
        if self.stopping:
            return
        self.stopping = True
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
