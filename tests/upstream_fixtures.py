"""Fixtures for anything that talks to an upstream: real simulators on real sockets.

- `simulator`: one simulator for the whole session (no chunk delay, 1 s jobs).
  Read it, do not reconfigure it; `stats()` is shared, so compare before and after.
- `start_simulator(**settings)`: start an extra simulator (e.g. `fail_status=503`,
  `chunk_delay_ms=20`) that is stopped after the test.
- `make_fleet(*servers, **options)`: a Fleet over simulators, quick to retry and probe.
- `upstream_fleet`: a Fleet over `simulator`, installed as the process fleet
  (`upstream.fleet.get_fleet()`) for the duration of the test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from upstream.fleet import Fleet, FleetOptions, Timeouts, set_fleet
from upstream.nodes import NodeConfig
from upstream.simulator import SimulatorServer, SimulatorSettings

TEST_KEY = "sk-mira-" + "7e57" * 10

QUICK = FleetOptions(
    timeouts=Timeouts(connect=2.0, first_byte=10.0, idle=10.0, total=30.0),
    backoff_base=0.01,
    backoff_cap=0.05,
    probe_interval=0.1,
)


def _settings(**changes: Any) -> SimulatorSettings:
    changes.setdefault("chunk_delay_ms", 0.0)
    changes.setdefault("job_seconds", 1.0)
    return SimulatorSettings(**changes)


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorServer]:
    """The session's simulator: `.base_url` (ends in /v1), `.url`, `.key`, `.stats()`."""
    server = SimulatorServer(_settings()).start()
    yield server
    server.stop()


@pytest.fixture
def start_simulator() -> Iterator[Callable[..., SimulatorServer]]:
    """Start extra simulators with settings, e.g. `start_simulator(fail_status=503)`."""
    started: list[SimulatorServer] = []

    def start(**settings: Any) -> SimulatorServer:
        server = SimulatorServer(_settings(**settings)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.request_stop()
    for server in started:
        server.stop()


def fleet_over(
    *servers: SimulatorServer,
    names: list[str] | None = None,
    options: FleetOptions | None = None,
    **node_fields: Any,
) -> Fleet:
    nodes = [
        NodeConfig(
            name=names[i] if names else f"sim-{i + 1}",
            base_url=server.base_url,
            api_key=server.settings.key or TEST_KEY,
            **node_fields,
        )
        for i, server in enumerate(servers)
    ]
    return Fleet(nodes, options=options or QUICK)


@pytest.fixture
def make_fleet() -> Callable[..., Fleet]:
    """Build a Fleet over simulators: `make_fleet(sim_a, sim_b, names=[...], options=...)`."""
    return fleet_over


@pytest.fixture
def upstream_fleet(simulator: SimulatorServer) -> Iterator[Fleet]:
    """A fleet over the session simulator, serving as `get_fleet()` during the test."""
    fleet = fleet_over(simulator, names=["simulator"])
    fleet.is_simulator = True
    previous = set_fleet(fleet)
    yield fleet
    set_fleet(previous)


def wait_for(predicate: Callable[[], bool], attempts: int = 2000) -> bool:
    """Poll a condition the system reaches on its own (a closed socket, a probe); True once met."""
    for _ in range(attempts):
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


async def await_for(predicate: Callable[[], bool], attempts: int = 2000) -> bool:
    """`wait_for` for async tests: yields to the loop between polls."""
    for _ in range(attempts):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()
