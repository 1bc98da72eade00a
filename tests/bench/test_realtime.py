"""The benchmark's realtime line, against a real simulator process standing in for both sides."""

from bench import realtime
from tests.bench.test_gateway_runs import simulator_setup  # noqa: F401


async def test_frames_take_turns_and_every_session_is_held_and_answers(simulator_setup):  # noqa: F811
    result = await realtime.measure(simulator_setup, frames=40, sessions=60, rounds=4)
    assert len(result.frames["direct"]) == len(result.frames["gateway"]) == 40
    assert all(0 < seconds < 5 for seconds in result.frames["gateway"])
    assert result.sessions_held == 60 and not result.failures
    assert len(result.held_turns) == 60
    lines = realtime.lines(result)
    assert "sessions held at once by the console: 60 of 60" in lines[2]
    assert realtime.as_json(result)["sessions_held"] == 60
