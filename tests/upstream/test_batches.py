"""Reading a stream in batches, as the gateway's relay does: every chunk that has
arrived at once, a keep-alive turn when the upstream is quiet, errors after the
chunks that came before them."""

import time
from dataclasses import replace

import pytest

from tests.upstream_fixtures import QUICK
from upstream import client
from upstream.errors import UpstreamError
from upstream.fleet import Timeouts

STORY = {"model": "mira", "messages": [{"role": "user", "content": "Tell me about rivers"}]}


async def batches(stream, wait: float = 5.0) -> list[list]:
    found = []
    while (batch := await stream.batch(wait)) is not None:
        found.append(batch)
    return found


async def test_batches_hold_the_same_chunks_as_reading_one_by_one(upstream_fleet):
    async with client.stream_chat_completions(upstream_fleet, STORY) as stream:
        one_by_one = [chunk async for chunk in stream]
    async with client.stream_chat_completions(upstream_fleet, STORY) as stream:
        batched = [chunk.data for batch in await batches(stream) for chunk in batch]
        assert stream.done and stream.chunks == len(batched)
    assert [c["choices"] for c in batched] == [c["choices"] for c in one_by_one]
    assert batched[-1]["choices"][0]["finish_reason"] == "stop"


async def test_a_chunk_is_handed_out_as_soon_as_it_arrives(start_simulator, make_fleet):
    server = start_simulator(chunk_delay_ms=40)
    fleet = make_fleet(server)
    async with client.stream_chat_completions(fleet, STORY | {"max_tokens": 6}) as stream:
        arrivals = []
        while (batch := await stream.batch(5.0)) is not None:
            arrivals.append((time.monotonic(), len(batch)))
    # Chunks 40 ms apart come one batch each, not held back until the stream ends.
    assert sum(size for _, size in arrivals) == stream.chunks >= 7
    assert len(arrivals) >= 6
    assert arrivals[-1][0] - arrivals[0][0] >= 0.15
    await fleet.aclose()


async def test_a_quiet_upstream_gives_an_empty_batch_for_a_keep_alive(start_simulator, make_fleet):
    server = start_simulator(chunk_delay_ms=300)
    fleet = make_fleet(server)
    async with client.stream_chat_completions(fleet, STORY | {"max_tokens": 2}) as stream:
        found = await batches(stream, wait=0.05)
    assert [] in found
    assert sum(len(batch) for batch in found) == stream.chunks >= 3
    await fleet.aclose()


async def batches_until_it_fails(fleet, headers: dict, wait: float) -> tuple[list, UpstreamError]:
    found = []
    with pytest.raises(UpstreamError) as caught:
        async with client.stream_chat_completions(fleet, STORY, headers=headers) as stream:
            while (batch := await stream.batch(wait)) is not None:
                found.append(batch)
    return found, caught.value


async def test_an_error_event_comes_after_the_chunks_before_it(upstream_fleet):
    found, error = await batches_until_it_fails(
        upstream_fleet, {"x-sim-error-after-chunks": "2"}, wait=5.0
    )
    assert error.status == 502 and error.code == "queue_full"
    assert sum(len(batch) for batch in found) == 2


async def test_keep_alive_turns_do_not_stop_the_idle_timeout(start_simulator, make_fleet):
    server = start_simulator()
    stalling = Timeouts(connect=2.0, first_byte=5.0, idle=0.3, total=10.0)
    fleet = make_fleet(server, options=replace(QUICK, timeouts=stalling))
    found, error = await batches_until_it_fails(fleet, {"x-sim-hang-after-chunks": "2"}, wait=0.05)
    assert error.status == 504
    assert sum(len(batch) for batch in found) == 2
    assert found.count([]) >= 3
    await fleet.aclose()
