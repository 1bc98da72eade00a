"""The benchmark's runs: calls in rounds that two targets take in turns, on kept connections."""

import pytest

from bench.load import Load, Plan, Target, alternating, round_sizes
from bench.servers import steal_share
from tests.bench.calls import chat_call


@pytest.mark.parametrize(
    ("requests", "concurrency", "rounds", "sizes"),
    [
        (1000, 1, 10, [100] * 10),
        (1005, 1, 10, [101] * 9 + [96]),
        (3000, 16, 10, [300] * 10),
        # At least ten calls per caller in a round: fewer, larger rounds at c=64.
        (3000, 64, 10, [640] * 4 + [440]),
        (50, 1, 100, [10] * 5),
        (7, 1, 1, [7]),
    ],
)
def test_rounds_add_up_to_the_calls_asked_for(requests, concurrency, rounds, sizes):
    assert round_sizes(requests, concurrency, rounds) == sizes
    assert sum(sizes) == requests


def test_targets_take_turns_at_going_first():
    assert alternating(["direct", "gateway"], 4) == [
        ["direct", "gateway"],
        ["gateway", "direct"],
        ["direct", "gateway"],
        ["gateway", "direct"],
    ]
    assert alternating(["direct", "gateway"], 1) == [["direct", "gateway"]]


def test_steal_is_the_share_of_cpu_time_between_two_readings():
    assert steal_share((1000, 10), (3000, 110)) == pytest.approx(0.05)
    assert steal_share(None, (3000, 110)) is None
    assert steal_share((3000, 110), (3000, 110)) is None


async def test_rounds_keep_their_connections_and_count_every_call(start_simulator):
    server = start_simulator()
    host, port, raw = chat_call(server)
    target = Target(
        name="direct",
        host=host,
        port=port,
        raw_request=raw,
        keep_body=True,
        check=lambda answer: b'"choices"' in answer.body,
    )
    load = Load(target, Plan(concurrency=2, requests=12, warmup=4, max_seconds=30))
    try:
        await load.open()
        assert load.samples.ok == 0  # warm-up calls are not timed
        await load.round(5)
        await load.round(7)
    finally:
        load.close()
    assert load.samples.ok == 12
    assert load.samples.error_count == 0
    assert load.samples.elapsed > 0
    assert all(
        0 < first <= total
        for first, total in zip(load.samples.first, load.samples.total, strict=True)
    )
    # Two callers, two connections, for the warm-up and both rounds.
    assert [connection.connects for connection in load.connections] == [1, 1]
    assert server.stats()["requests"] >= 16


async def test_a_wrong_answer_is_an_error_and_left_out_of_the_latencies(start_simulator):
    server = start_simulator()
    host, port, raw = chat_call(server, key=False)  # the simulator answers 401
    target = Target("direct", host, port, raw, keep_body=True, check=lambda answer: True)
    load = Load(target, Plan(concurrency=1, requests=3, warmup=3, max_seconds=30))
    try:
        await load.open()
        await load.round(3)
    finally:
        load.close()
    assert load.samples.ok == 0
    assert load.samples.errors == {"status 401": 3}
