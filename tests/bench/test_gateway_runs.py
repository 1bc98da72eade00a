"""The benchmark's runs in turns, against a real simulator process standing in for both sides."""

import os
import secrets

import pytest

from bench.gateway import Setup, _in_turns, _start, simulator_command, target
from bench.load import Plan
from bench.simulator import KEY_VARIABLE


@pytest.fixture
def simulator_setup(tmp_path):
    key = "sk-mira-" + secrets.token_hex(20)
    started = []
    try:
        server = _start(
            "simulator",
            lambda port: simulator_command(port, 0),
            dict(os.environ) | {KEY_VARIABLE: key},
            tmp_path / "simulator.log",
            ("/v1/models", {"Authorization": f"Bearer {key}"}),
            started,
        )
        yield Setup(server, server, key, key, tmp_path)
    finally:
        for server in started:
            server.stop()


@pytest.mark.parametrize("mode", ["chat", "stream", "image"])
async def test_both_sides_make_every_call_in_rounds_and_count_their_cpu(simulator_setup, mode):
    setup = simulator_setup
    targets = {
        name: target(name, setup.simulator.port, setup.upstream_key, mode, 4)
        for name in ("direct", "gateway")
    }
    plan = Plan(concurrency=2, requests=45, warmup=4, max_seconds=30)
    results = await _in_turns(setup, targets, plan, rounds=3, settle=0.05)
    assert [name for name, _, _ in results] == ["direct", "gateway"]
    for _, load, cpu in results:
        assert load.samples.ok == 45
        assert load.samples.error_count == 0
        assert not load.samples.hit_time_limit
        # Read around each round and added up: every process has a figure, the
        # simulator (which served all the calls) a positive one, however short the
        # rounds (its CPU-time clock counts nanoseconds, not clock ticks).
        assert set(cpu) == {"console", "simulator", "generator"}
        assert cpu["simulator"] > 0
        assert cpu["generator"] > 0
