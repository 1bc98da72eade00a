import asyncio
import signal

from django.core.management.base import BaseCommand

from console import db
from gateway.job_runner import Runner


class Command(BaseCommand):
    help = (
        "Poll and settle music and video jobs until stopped (SIGTERM or Ctrl+C). Serving "
        "workers run this themselves unless GATEWAY_JOB_RUNNER is off; any number may run."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="one round over the jobs due now, then exit"
        )
        parser.add_argument(
            "--interval", type=float, default=None,
            help="seconds between looks when nothing is due (default: GATEWAY_JOB_IDLE_SECONDS)",
        )  # fmt: skip

    def handle(self, *args, once: bool, interval: float | None, **options) -> None:
        runner = Runner(interval=interval)
        try:
            if once:
                count = asyncio.run(runner.run_once())
                self.stdout.write(f"Advanced {count} job{'s' if count != 1 else ''}.")
                return
            # A stopped runner ends its round first: what it claimed is given back or settled.
            signal.signal(signal.SIGTERM, lambda *_: runner.stop_soon())
            try:
                asyncio.run(runner.run())
            except KeyboardInterrupt:
                pass
        finally:
            db.close_all()
