"""UpstreamError carries status, retry-after and node, and never a node's key."""

import logging
from dataclasses import replace

import pytest

from tests.upstream_fixtures import QUICK
from upstream import client
from upstream.errors import UpstreamError
from upstream.fleet import Fleet
from upstream.nodes import NodeConfig

SECRET = "sk-mira-" + "5ec7e7" * 7
HELLO = {"model": "mira", "messages": [{"role": "user", "content": "Hello"}]}


def leaks(text: str) -> bool:
    return SECRET in text or SECRET[8:] in text


@pytest.fixture
def guarded(start_simulator):
    """A simulator that accepts another key, and a fleet that holds SECRET for it."""
    server = start_simulator(key="sk-mira-" + "1" * 40)
    fleet = Fleet([NodeConfig("guarded", server.base_url, SECRET)])
    return server, fleet


async def test_an_error_says_status_node_and_retry_after(start_simulator):
    server = start_simulator(fail_status=503, fail_retry_after=3)
    # Retry-After (3 s) is longer than the fleet may wait, so the error comes back at once.
    fleet = Fleet(
        [NodeConfig("only", server.base_url, SECRET)], options=replace(QUICK, max_retry_wait=1)
    )
    with pytest.raises(UpstreamError) as caught:
        await client.chat_completions(fleet, HELLO)
    error = caught.value
    assert (error.status, error.node, error.retry_after) == (503, "only", 3.0)
    assert error.detail == "Server is at capacity, please try again later"
    assert (
        str(error)
        == error.message
        == ("Upstream error 503 from node only: Server is at capacity, please try again later")
    )
    await fleet.aclose()


async def test_connection_failures_are_502_and_name_the_node():
    fleet = Fleet([NodeConfig("gone", "http://127.0.0.1:9/v1", SECRET)])
    with pytest.raises(UpstreamError) as caught:
        await client.list_models(fleet)
    assert caught.value.status == 502
    assert caught.value.node == "gone"
    assert not leaks(repr(caught.value))
    await fleet.aclose()


async def test_the_key_never_appears_in_errors_or_logs(guarded, caplog):
    server, fleet = guarded
    for name in (None, "aiohttp", "websockets", "upstream"):
        caplog.set_level(logging.DEBUG, logger=name)
    echoing = {"x-sim-status": "403", "x-sim-detail": f"key {SECRET} lacks the plan"}
    errors = []
    for call in (
        client.chat_completions(fleet, HELLO),
        client.chat_completions(fleet, HELLO, headers=echoing),
        client.realtime_connect(fleet, auth="subprotocol"),
        client.realtime_connect(fleet),
    ):
        with pytest.raises(UpstreamError) as caught:
            await call
        errors.append(caught.value)
    with pytest.raises(UpstreamError) as caught:
        async with client.stream_chat_completions(fleet, HELLO):
            pass
    errors.append(caught.value)
    assert [e.status for e in errors] == [401, 403, 401, 401, 401]
    for error in errors:
        assert not leaks(str(error)) and not leaks(repr(error)) and not leaks(error.detail)
    assert "[redacted]" in errors[1].detail
    for record in caplog.records:
        assert not leaks(record.getMessage())
    await fleet.aclose()


def test_a_repr_never_shows_the_key_of_a_node_config():
    config = NodeConfig("n", "https://api.vmira.ai/v1", SECRET)
    assert not leaks(repr(config))
    assert not leaks(str(UpstreamError(500, f"oops {SECRET}", node="n")))
