"""Failover, ejection, timeouts, resets and cancellation, against failing simulators."""

import asyncio
from dataclasses import replace

import pytest

from tests.upstream_fixtures import QUICK, await_for
from upstream import client
from upstream.errors import UpstreamError
from upstream.fleet import Timeouts

HELLO = {"model": "mira", "messages": [{"role": "user", "content": "Hello"}]}
STREAMED = {**HELLO, "stream": True}
CHAT = "/v1/chat/completions"
IMPATIENT = replace(
    QUICK, timeouts=Timeouts(connect=2.0, first_byte=0.3, idle=0.3, total=10.0), max_attempts=2
)


def by_name(fleet) -> dict[str, dict]:
    return {state["name"]: state for state in fleet.state()}


async def test_calls_fail_over_from_a_node_answering_503(start_simulator, make_fleet):
    good, bad = start_simulator(), start_simulator(fail_status=503)
    fleet = make_fleet(good, bad, names=["good", "bad"])
    responses = [await client.chat_completions(fleet, HELLO) for _ in range(30)]
    assert {r.node for r in responses} == {"good"}
    assert any(r.attempts == 2 for r in responses)
    assert bad.stats()["by_status"]["503"] >= 1
    async with client.stream_chat_completions(fleet, HELLO) as stream:
        assert [chunk async for chunk in stream]
    assert stream.node == "good"
    await fleet.aclose()


async def test_calls_fail_over_from_a_node_answering_429_with_retry_after(
    start_simulator, make_fleet
):
    good, limited = start_simulator(), start_simulator(fail_status=429, fail_retry_after=1)
    fleet = make_fleet(good, limited, names=["good", "limited"])
    responses = [await client.chat_completions(fleet, HELLO) for _ in range(30)]
    assert {r.node for r in responses} == {"good"}
    assert limited.stats()["by_status"]["429"] >= 1
    state = by_name(fleet)["limited"]
    assert state["healthy"] is True
    assert state["last_error"] == "429: Rate limit exceeded, retry after 1 seconds"
    await fleet.aclose()


async def test_a_rate_limited_single_node_is_retried_after_retry_after(start_simulator, make_fleet):
    server = start_simulator(fail_status=429, fail_retry_after=0.2)
    fleet = make_fleet(server)
    with pytest.raises(UpstreamError) as caught:
        await fleet.request("GET", "/v1/models")
    assert caught.value.status == 429
    assert caught.value.retry_after == 0.2
    assert server.stats()["by_status"]["429"] == QUICK.max_attempts
    await fleet.aclose()


async def test_a_retry_after_beyond_the_cap_goes_back_to_the_caller(start_simulator, make_fleet):
    server = start_simulator(fail_status=429, fail_retry_after=60)
    fleet = make_fleet(server)
    with pytest.raises(UpstreamError) as caught:
        await fleet.request("GET", "/v1/models")
    assert caught.value.retry_after == 60
    assert server.stats()["by_status"]["429"] == 1
    await fleet.aclose()


async def test_a_client_error_is_not_retried(start_simulator, make_fleet):
    first, second = start_simulator(), start_simulator()
    fleet = make_fleet(first, second)
    with pytest.raises(UpstreamError) as caught:
        await client.chat_completions(fleet, {"messages": []})
    assert caught.value.status == 400
    assert caught.value.detail == "The 'model' field is required."
    assert first.stats()["requests"] + second.stats()["requests"] == 1
    await fleet.aclose()


async def test_a_failing_node_is_ejected_and_a_probe_readmits_it(start_simulator, make_fleet):
    good, flaky = start_simulator(), start_simulator(fail_status=503)
    fleet = make_fleet(good, flaky, names=["good", "flaky"])
    with pytest.raises(UpstreamError):
        await fleet.request("GET", "/v1/models", node="flaky")
    state = by_name(fleet)["flaky"]
    assert state["healthy"] is False
    assert state["recent_errors"] == QUICK.max_attempts
    assert "503" in state["last_error"]
    served_before = flaky.stats()["by_route"].get("POST /v1/chat/completions", 0)
    for _ in range(10):
        assert (await client.chat_completions(fleet, HELLO)).node == "good"
    assert flaky.stats()["by_route"].get("POST /v1/chat/completions", 0) == served_before

    flaky.configure(fail_status=None)
    for _ in range(300):
        await client.list_models(fleet)
        if by_name(fleet)["flaky"]["healthy"]:
            break
        await asyncio.sleep(0.01)
    assert by_name(fleet)["flaky"]["healthy"] is True
    nodes = {(await client.list_models(fleet)).node for _ in range(30)}
    assert nodes == {"good", "flaky"}
    await fleet.aclose()


async def test_probe_checks_ejected_nodes_on_demand(start_simulator, make_fleet):
    flaky = start_simulator(fail_status=500)
    fleet = make_fleet(flaky)
    with pytest.raises(UpstreamError):
        await fleet.request("GET", "/v1/models")
    assert fleet.state()[0]["healthy"] is False
    assert await fleet.probe() == {"sim-1": False}
    flaky.configure(fail_status=None)
    assert await fleet.probe() == {"sim-1": True}
    assert fleet.state()[0]["healthy"] is True
    await fleet.aclose()


async def test_a_stream_retries_on_another_node_before_its_first_chunk(start_simulator, make_fleet):
    good, bad = start_simulator(), start_simulator(fail_status=502)
    fleet = make_fleet(good, bad, names=["good", "bad"])
    for _ in range(10):
        async with client.stream_chat_completions(fleet, HELLO) as stream:
            chunks = [chunk async for chunk in stream]
        assert stream.node == "good" and stream.done and chunks
    await fleet.aclose()


async def test_a_reset_after_the_first_chunk_is_an_error_not_a_retry(start_simulator, make_fleet):
    first, second = start_simulator(), start_simulator()
    fleet = make_fleet(first, second)
    received = []
    with pytest.raises(UpstreamError) as caught:
        async with client.stream_chat_completions(
            fleet, HELLO, headers={"x-sim-reset-after-chunks": "3"}
        ) as stream:
            async for chunk in stream:
                received.append(chunk)
    assert caught.value.status == 502
    assert caught.value.node == stream.node
    assert len(received) == 3
    assert first.stats()["streams_started"] + second.stats()["streams_started"] == 1
    await fleet.aclose()


async def test_an_error_event_mid_stream_surfaces_as_an_error(upstream_fleet):
    with pytest.raises(UpstreamError) as caught:
        async with client.stream_chat_completions(
            upstream_fleet, HELLO, headers={"x-sim-error-after-chunks": "2"}
        ) as stream:
            async for _ in stream:
                pass
    assert caught.value.detail == "Server is at capacity, please try again later"
    assert caught.value.code == "queue_full"
    assert stream.chunks == 2


async def test_a_hung_node_hits_the_first_byte_timeout(start_simulator, make_fleet):
    server = start_simulator()
    fleet = make_fleet(server, options=IMPATIENT)
    with pytest.raises(UpstreamError) as caught:
        await fleet.request("GET", "/v1/models", headers={"x-sim-hang": "1"})
    assert caught.value.status == 504
    assert caught.value.node == "sim-1"
    with pytest.raises(UpstreamError) as caught:
        async with fleet.stream("POST", CHAT, json=STREAMED, headers={"x-sim-hang": "1"}):
            pass
    assert caught.value.status == 504
    assert await await_for(lambda: server.stats()["open_requests"] == 0)
    await fleet.aclose()


async def test_a_stream_that_stalls_hits_the_idle_timeout(start_simulator, make_fleet):
    server = start_simulator()
    stalling = Timeouts(connect=2.0, first_byte=5.0, idle=0.3, total=10.0)
    fleet = make_fleet(server, options=replace(QUICK, timeouts=stalling))
    received = []
    with pytest.raises(UpstreamError) as caught:
        async with fleet.stream(
            "POST", CHAT, json=STREAMED, headers={"x-sim-hang-after-chunks": "2"}
        ) as stream:
            async for chunk in stream:
                received.append(chunk)
    assert caught.value.status == 504
    assert len(received) == 2
    assert await await_for(lambda: server.stats()["streams_cancelled"] == 1)
    await fleet.aclose()


async def test_a_slow_stream_hits_the_total_timeout(start_simulator, make_fleet):
    server = start_simulator(chunk_delay_ms=30)
    fleet = make_fleet(server)
    limits = Timeouts(connect=1.0, first_byte=1.0, idle=1.0, total=0.3)
    with pytest.raises(UpstreamError) as caught:
        async with client.stream_chat_completions(fleet, HELLO, timeouts=limits) as stream:
            async for _ in stream:
                pass
    assert caught.value.status == 504
    await fleet.aclose()


async def test_leaving_a_stream_early_closes_the_upstream_connection(start_simulator, make_fleet):
    server = start_simulator(chunk_delay_ms=10)
    fleet = make_fleet(server)
    async with client.stream_chat_completions(fleet, HELLO) as stream:
        await anext(stream)
    assert await await_for(lambda: server.stats()["streams_cancelled"] == 1)
    assert server.stats()["open_streams"] == 0
    assert fleet.state()[0]["outstanding"] == 0
    await fleet.aclose()


async def test_cancelling_the_task_closes_the_upstream_connection(start_simulator, make_fleet):
    server = start_simulator(chunk_delay_ms=10)
    fleet = make_fleet(server)
    first_chunk = asyncio.Event()

    async def consume() -> None:
        async with client.stream_chat_completions(fleet, HELLO) as stream:
            async for _ in stream:
                first_chunk.set()

    task = asyncio.create_task(consume())
    await first_chunk.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await await_for(lambda: server.stats()["streams_cancelled"] == 1)
    assert fleet.state()[0]["outstanding"] == 0
    await fleet.aclose()


async def test_two_hundred_faulty_calls_leak_no_connection_or_task(start_simulator, make_fleet):
    servers = [start_simulator(), start_simulator()]
    fleet = make_fleet(*servers, options=replace(QUICK, max_attempts=2))
    hurried = Timeouts(connect=2.0, first_byte=0.2, idle=0.2, total=10.0)
    tasks_before = len(asyncio.all_tasks())
    faults = [
        {"x-sim-status": "503"},
        {"x-sim-status": "500"},
        {"x-sim-reset-after-chunks": "0"},
        {"x-sim-hang": "1"},
        {"x-sim-reset-after-chunks": "2"},
        {"x-sim-hang-after-chunks": "1"},
        {"x-sim-error-after-chunks": "2"},
        {"x-sim-chunk-delay-ms": "5"},
    ]

    async def faulty(index: int) -> None:
        kind = index % len(faults)
        headers = faults[kind]
        # Only the hanging calls need short timeouts; the others should fail as asked.
        limits = hurried if kind in (3, 5) else None
        try:
            if kind < 4:
                await fleet.request("POST", CHAT, json=HELLO, headers=headers, timeouts=limits)
            else:
                async with fleet.stream(
                    "POST", CHAT, json=STREAMED, headers=headers, timeouts=limits
                ) as stream:
                    async for _ in stream:
                        if kind == 7:
                            break
        except UpstreamError:
            pass

    for batch in range(4):
        await asyncio.gather(*(faulty(batch * 50 + i) for i in range(50)))

    assert all(state["outstanding"] == 0 for state in fleet.state())
    assert sum(server.stats()["streams_reset"] for server in servers) == 25
    assert await await_for(
        lambda: sum(server.stats()["streams_cancelled"] for server in servers) >= 50
    )
    assert await await_for(lambda: len(asyncio.all_tasks()) == tasks_before)
    for server in servers:
        assert await await_for(lambda s=server: s.stats()["open_requests"] == 0)
        assert server.stats()["open_streams"] == 0
        assert server.stats()["open_connections"] <= QUICK.max_keepalive
    await fleet.aclose()
    for server in servers:
        assert await await_for(lambda s=server: s.stats()["open_connections"] == 0)


async def test_a_file_sent_from_disk_is_sent_whole_again_when_the_call_fails_over(
    start_simulator, make_fleet, tmp_path
):
    from upstream.simulator import audio

    path = tmp_path / "speech.wav"
    path.write_bytes(audio.wav_bytes(b"\1\0" * 48_000, comment="Sent twice, heard once."))
    good, bad = start_simulator(), start_simulator(fail_status=503)
    fleet = make_fleet(good, bad, names=["good", "bad"])
    attempts = []
    for _ in range(20):
        with path.open("rb") as file:
            response = await fleet.request(
                "POST", "/v1/audio/transcribe", data={"language": "en"},
                files={"file": ("speech.wav", file, "audio/wav")},
            )  # fmt: skip
        assert response.json() == {"text": "Sent twice, heard once.", "language": "en",
                                   "duration": 2.0}  # fmt: skip
        attempts.append(response.attempts)
    assert 2 in attempts
    assert bad.stats()["by_status"]["503"] >= 1
    await fleet.aclose()


async def test_raw_bytes_fail_over_before_the_headers_and_arrive_whole(start_simulator, make_fleet):
    good, bad = start_simulator(), start_simulator(fail_status=503)
    fleet = make_fleet(good, bad, names=["good", "bad"])
    speech = {"input": "Piece by piece.", "response_format": "wav"}
    attempts = []
    for _ in range(20):
        async with fleet.stream_bytes("POST", "/v1/audio/speech", json=speech) as stream:
            data = b"".join([piece async for piece in stream])
        assert stream.node == "good" and stream.content_type == "audio/wav"
        assert data[:4] == b"RIFF" and len(data) == int.from_bytes(data[4:8], "little") + 8
        attempts.append(stream.attempts)
    assert 2 in attempts
    assert all(node["outstanding"] == 0 for node in fleet.state())
    await fleet.aclose()


async def test_raw_bytes_refused_by_the_node_raise_without_a_retry(start_simulator, make_fleet):
    server = start_simulator()
    fleet = make_fleet(server)
    with pytest.raises(UpstreamError) as caught:
        async with fleet.stream_bytes(
            "POST", "/v1/audio/speech", json={"input": "Hi", "voice": "nobody"}
        ):
            pass
    assert caught.value.status == 400 and "Unknown voice" in caught.value.detail
    assert server.stats()["by_status"]["400"] == 1
    await fleet.aclose()
