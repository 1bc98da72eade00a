"""The benchmark's load generator: one keep-alive connection per caller, answers checked."""

import json

from bench.client import Connection
from tests.bench.calls import chat_call


async def test_calls_reuse_one_connection_and_read_whole_answers(start_simulator):
    server = start_simulator()
    host, port, raw = chat_call(server)
    connection = Connection(host, port, keep_body=True)
    answers = [await connection.request(raw, 10) for _ in range(5)]
    assert [answer.status for answer in answers] == [200] * 5
    assert all(json.loads(answer.body)["choices"] for answer in answers)
    assert 0 < answers[0].first_body <= answers[0].total
    # One connection for all five: a call that had to connect first would not be like
    # the calls of a client that keeps its connections, as SDKs do.
    assert connection.connects == 1
    assert server.stats()["open_connections"] == 1
    connection.close()
