"""`python -m bench.simulator --port N`: the Mira simulator as its own uvicorn process.

Like `manage.py simulator`, but set up to be measured against: no Django, no access
log, uvloop and httptools named explicitly (as the console gets them), and the one
key to accept taken from the environment (`MIRA_BENCH_SIMULATOR_KEY`) rather than the
command line, where other users of the machine could read it.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from upstream.simulator import Simulator, SimulatorSettings

KEY_VARIABLE = "MIRA_BENCH_SIMULATOR_KEY"


def build_app(chunk_delay_ms: float, key: str | None) -> Simulator:
    """A simulator that answers at once (no chunk delay by default) and fails nothing."""
    settings = SimulatorSettings(chunk_delay_ms=chunk_delay_ms, key=key, job_seconds=1.0)
    return Simulator(settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    app = build_app(args.chunk_delay_ms, os.environ.get(KEY_VARIABLE) or None)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    app.stats.connections = lambda: len(server.server_state.connections)
    server.run()


if __name__ == "__main__":
    main()
