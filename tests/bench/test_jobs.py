"""The benchmark's jobs line, against a real simulator process standing in for both sides,
and against the live console in front of the session's simulator."""

from types import SimpleNamespace
from urllib.parse import urlsplit

from bench import jobs
from tests.bench.test_gateway_runs import simulator_setup  # noqa: F401
from tests.gateway.conftest import api_key, console_url  # noqa: F401
from tests.upstream_fixtures import TEST_KEY


async def test_every_job_is_started_and_followed_until_it_ends(simulator_setup):  # noqa: F811
    # The simulator standing in for the console books nothing: no side waits for a cost.
    result = await jobs.measure(simulator_setup, jobs=6, rounds=2, settled=())
    assert not result.failures
    assert len(result.create["direct"]) == len(result.create["gateway"]) == 6
    assert len(result.ended["direct"]) == len(result.ended["gateway"]) == 6
    # A job ends after it was started.
    assert min(result.ended["gateway"]) > max(0, min(result.create["gateway"]))
    lines = jobs.lines(result)
    assert lines[1].startswith("  create, ms: direct p50") and "(6 jobs)" in lines[2]
    assert jobs.as_json(result)["ended_ms"]["gateway"]["jobs"] == 6


async def test_through_the_console_a_job_ends_once_it_is_settled(
    console_url,  # noqa: F811
    api_key,  # noqa: F811
    simulator,
    upstream_fleet,
):
    console = urlsplit(console_url)
    setup = SimpleNamespace(
        simulator=SimpleNamespace(port=urlsplit(simulator.base_url).port),
        console=SimpleNamespace(port=console.port),
        upstream_key=simulator.settings.key or TEST_KEY,
        gateway_key=api_key,
    )
    result = await jobs.measure(setup, jobs=2, rounds=1)
    assert not result.failures, result.failures
    assert len(result.ended["gateway"]) == 2
