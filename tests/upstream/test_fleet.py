"""The fleet: configuration, routing, balancing, state, and use from many event loops."""

import asyncio
import json
import threading

import httpx
import pytest
from asgiref.sync import async_to_sync

from tests.upstream_fixtures import TEST_KEY, wait_for
from upstream import client
from upstream.errors import FleetConfigError, UpstreamError
from upstream.fleet import Fleet, UpstreamResponse, get_fleet, set_fleet
from upstream.nodes import parse_model

HELLO = {"model": "mira", "messages": [{"role": "user", "content": "Hello"}]}


def test_one_node_comes_from_the_api_base_and_key(simulator):
    fleet = Fleet.from_env({"MIRA_API_BASE": simulator.base_url, "MIRA_API_KEY": TEST_KEY})
    assert fleet.is_simulator is False
    assert fleet.node_names() == ["127.0.0.1"]
    assert asyncio.run(client.list_models(fleet)).status == 200


def test_the_key_may_come_from_a_file(simulator, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(TEST_KEY + "\n")
    env = {"MIRA_API_BASE": simulator.base_url, "MIRA_API_KEY_FILE": str(key_file)}
    fleet = Fleet.from_env(env)
    assert fleet.nodes[0].config.api_key == TEST_KEY


def test_an_api_base_without_a_key_is_a_configuration_error():
    with pytest.raises(FleetConfigError, match="MIRA_API_KEY"):
        Fleet.from_env({"MIRA_API_BASE": "https://api.vmira.ai/v1"})


def test_a_fleet_file_lists_nodes_with_weights_models_and_providers(tmp_path, simulator):
    nodes = [
        {"name": "east", "base_url": simulator.base_url, "api_key_env": "EAST_KEY", "weight": 3},
        {
            "name": "west",
            "base_url": "https://west.example/v1",
            "api_key": "sk-mira-west",
            "models": ["mira", "mira-pro"],
            "provider": "anthropic",
        },
    ]
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(nodes))
    fleet = Fleet.from_env({"MIRA_FLEET_FILE": str(path), "EAST_KEY": TEST_KEY})
    east, west = fleet.nodes
    assert (east.name, east.config.weight, east.config.api_key) == ("east", 3.0, TEST_KEY)
    assert west.config.models == frozenset({"mira", "mira-pro"})
    assert west.config.provider == "anthropic"
    assert east.config.root_url == simulator.url


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "non-empty list"),
        ('[{"name": "a", "base_url": "https://a/v1", "api_key": "k", "wieght": 2}]', "wieght"),
        ('[{"name": "a", "base_url": "https://a/v1", "api_key_env": "NOPE"}]', "NOPE"),
        ('[{"name": "a", "base_url": "ftp://a", "api_key": "k"}]', "http"),
        ('[{"name": "a", "base_url": "https://a", "api_key": "k", "weight": 0}]', "weight"),
    ],
)
def test_a_bad_fleet_file_says_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "fleet.json"
    path.write_text(content)
    with pytest.raises(FleetConfigError, match=message):
        Fleet.from_env({"MIRA_FLEET_FILE": str(path)})


def test_without_configuration_the_built_in_simulator_is_the_upstream():
    fleet = Fleet.from_env({"MIRA_SIMULATOR_CHUNK_DELAY_MS": "0"})
    assert fleet.is_simulator is True
    response = asyncio.run(client.chat_completions(fleet, HELLO))
    assert response.status == 200
    assert response.node == "simulator"
    assert fleet.state()[0]["base_url"].startswith("http://127.0.0.1:")


def test_get_fleet_is_built_once_and_shared_by_threads(monkeypatch, simulator):
    monkeypatch.setenv("MIRA_API_BASE", simulator.base_url)
    monkeypatch.setenv("MIRA_API_KEY", TEST_KEY)
    monkeypatch.delenv("MIRA_FLEET_FILE", raising=False)
    previous = set_fleet(None)
    try:
        seen = []
        threads = [threading.Thread(target=lambda: seen.append(get_fleet())) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(seen) == 8 and all(fleet is seen[0] for fleet in seen)
        assert seen[0] is get_fleet()
        assert asyncio.run(client.list_models(get_fleet())).status == 200
    finally:
        set_fleet(previous)


def test_one_fleet_serves_many_event_loops_and_each_loop_closes_its_connections(
    start_simulator, make_fleet
):
    server = start_simulator()
    fleet = make_fleet(server)
    results: list[list[int]] = []

    async def three_calls() -> list[int]:
        responses = await asyncio.gather(*(client.chat_completions(fleet, HELLO) for _ in range(3)))
        return [r.status for r in responses]

    def worker() -> None:
        results.append(asyncio.run(three_calls()))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The way Django calls async code from sync views: a new loop per call.
    for _ in range(3):
        results.append(async_to_sync(three_calls)())
    assert results == [[200, 200, 200]] * 7
    assert server.stats()["by_route"]["POST /v1/chat/completions"] == 21
    assert wait_for(lambda: server.stats()["open_connections"] == 0)


async def test_a_provider_prefix_routes_to_the_matching_node(start_simulator, make_fleet):
    first, second = start_simulator(), start_simulator()
    fleet = make_fleet(first, second, names=["alpha", "beta"])
    for _ in range(5):
        response = await client.chat_completions(fleet, {**HELLO, "model": "beta/mira"})
        assert response.node == "beta"
        assert response.json()["model"] == "mira"
    assert first.stats()["requests"] == 0
    assert parse_model("beta/mira").provider == "beta"
    await fleet.aclose()


async def test_an_unknown_provider_prefix_is_sent_as_the_whole_model_id(upstream_fleet):
    with pytest.raises(UpstreamError) as caught:
        await client.chat_completions(upstream_fleet, {**HELLO, "model": "openai/gpt-5"})
    assert caught.value.status == 400
    assert "Invalid model" in caught.value.detail


async def test_nodes_with_model_lists_only_get_those_models(start_simulator, make_fleet):
    from upstream.nodes import NodeConfig

    small, big = start_simulator(), start_simulator()
    fleet = Fleet(
        [
            NodeConfig("small", small.base_url, TEST_KEY, models=frozenset({"mira"})),
            NodeConfig("big", big.base_url, TEST_KEY),
        ]
    )
    for _ in range(6):
        response = await client.chat_completions(fleet, {**HELLO, "model": "mira-max"})
        assert response.node == "big"
    with pytest.raises(UpstreamError) as caught:
        await client.chat_completions(fleet, {**HELLO, "model": "small/mira-max"})
    assert caught.value.status == 400
    assert caught.value.node is None
    await fleet.aclose()


async def test_weights_send_most_calls_to_the_heavier_node(start_simulator, make_fleet):
    from upstream.nodes import NodeConfig

    light, heavy = start_simulator(), start_simulator()
    fleet = Fleet(
        [
            NodeConfig("light", light.base_url, TEST_KEY, weight=1),
            NodeConfig("heavy", heavy.base_url, TEST_KEY, weight=1000),
        ]
    )
    nodes = [(await client.list_models(fleet)).node for _ in range(40)]
    assert nodes.count("heavy") >= 35
    await fleet.aclose()


async def test_a_busy_node_is_passed_over_for_an_idle_one(start_simulator, make_fleet):
    first, second = start_simulator(chunk_delay_ms=10), start_simulator(chunk_delay_ms=10)
    fleet = make_fleet(first, second)
    body = {**HELLO, "stream": True}
    async with fleet.stream("POST", "/v1/chat/completions", json=body) as busy:
        await anext(busy)
        states = {s["name"]: s for s in fleet.state()}
        assert states[busy.node]["outstanding"] == 1
        for _ in range(5):
            response = await client.list_models(fleet)
            assert response.node != busy.node
    assert all(s["outstanding"] == 0 for s in fleet.state())
    await fleet.aclose()


async def test_a_pinned_call_goes_to_that_node(start_simulator, make_fleet):
    fleet = make_fleet(start_simulator(), start_simulator())
    for _ in range(4):
        assert (await fleet.request("GET", "/v1/models", node="sim-2")).node == "sim-2"
    await fleet.aclose()


async def test_paths_without_a_version_get_v1(upstream_fleet):
    response = await upstream_fleet.request("GET", "models")
    assert response.json()["object"] == "list"


async def test_state_describes_each_node_without_its_key(upstream_fleet):
    await client.list_models(upstream_fleet)
    (state,) = upstream_fleet.state()
    assert set(state) >= {
        "name", "base_url", "healthy", "outstanding", "p50_ms", "recent_errors", "last_error",
    }  # fmt: skip
    assert state["healthy"] is True
    assert state["p50_ms"] > 0
    assert TEST_KEY not in json.dumps(upstream_fleet.state())


async def test_a_file_on_another_host_is_downloaded_without_the_key(start_simulator, make_fleet):
    node = start_simulator()
    other = start_simulator(key="sk-mira-" + "c" * 40)
    fleet = make_fleet(node)
    response = await client.download(fleet, other.url + "/v1/models", node="sim-1")
    assert response.status == 200
    # The other host refuses the node's key, so the download cannot have sent it.
    async with httpx.AsyncClient() as http:
        refused = await http.get(
            other.url + "/v1/models", headers={"Authorization": f"Bearer {TEST_KEY}"}
        )
    assert refused.status_code == 401
    await fleet.aclose()


@pytest.mark.parametrize(
    ("body", "usage"),
    [
        (
            b'{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5}}',
            {"prompt_tokens": 7, "completion_tokens": 5},
        ),
        # Nested details: the whole body is parsed instead.
        (
            b'{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":1}}}',
            {"prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": 1}},
        ),
        # A reply that quotes a usage object is text, not the answer's usage.
        (
            b'{"choices":[{"message":{"content":"\\"usage\\": {\\"prompt_tokens\\": 99}"}}],'
            b'"usage":{"prompt_tokens":4}}',
            {"prompt_tokens": 4},
        ),
        (b'{"data":[]}', {}),
        (b'{"usage":null}', {}),
    ],
)
def test_an_answer_s_usage_is_read_with_or_without_parsing_all_of_it(body, usage):
    response = UpstreamResponse(status=200, headers={}, content=body, node="n", latency_ms=1.0)
    assert response.usage() == usage
