"""`manage.py simulator`: serve the Mira simulator as a stand-alone node."""

from __future__ import annotations

import os

import uvicorn
from django.core.management.base import BaseCommand, CommandParser

from upstream.simulator import Simulator, SimulatorSettings


class Command(BaseCommand):
    help = "Serve the Mira simulator (a fake upstream node) over HTTP and WebSocket."
    # A node of its own: none of the console's checks (its secret key, database) apply.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8100)
        parser.add_argument(
            "--chunk-delay-ms", type=float, default=30.0, help="delay between stream chunks"
        )
        parser.add_argument(
            "--key",
            default=os.environ.get("MIRA_SIMULATOR_KEY") or None,
            help="accept only this sk-mira- key (default: $MIRA_SIMULATOR_KEY, else any)",
        )
        parser.add_argument("--fail-status", type=int, default=None, help="answer every call so")
        parser.add_argument("--fail-retry-after", type=float, default=None)
        parser.add_argument("--latency-ms", type=float, default=0.0)
        parser.add_argument(
            "--job-seconds", type=float, default=6.0, help="how long music/video jobs take"
        )

    def handle(self, *args: object, **options: object) -> None:
        settings = SimulatorSettings(
            chunk_delay_ms=float(options["chunk_delay_ms"]),  # type: ignore[arg-type]
            key=options["key"] or None,  # type: ignore[arg-type]
            fail_status=options["fail_status"],  # type: ignore[arg-type]
            fail_retry_after=options["fail_retry_after"],  # type: ignore[arg-type]
            latency_ms=float(options["latency_ms"]),  # type: ignore[arg-type]
            job_seconds=float(options["job_seconds"]),  # type: ignore[arg-type]
        )
        app = Simulator(settings)
        config = uvicorn.Config(
            app,
            host=str(options["host"]),
            port=int(options["port"]),  # type: ignore[call-overload]
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        app.stats.connections = lambda: len(server.server_state.connections)
        self.stdout.write(
            f"Mira simulator on http://{options['host']}:{options['port']}/v1 "
            f"(chunk delay {settings.chunk_delay_ms:g} ms"
            f"{', failing with ' + str(settings.fail_status) if settings.fail_status else ''})"
        )
        server.run()
