"""The benchmark's load generator: one keep-alive connection per caller, answers checked."""

import json
from urllib.parse import urlsplit

from bench.client import Connection, build_request

CHAT = {"model": "mira", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}


async def test_calls_reuse_one_connection_and_read_whole_answers(start_simulator):
    server = start_simulator()
    host, port = urlsplit(server.base_url).hostname, urlsplit(server.base_url).port
    raw = build_request(
        host,
        port,
        "/v1/chat/completions",
        json.dumps(CHAT).encode(),
        {"authorization": f"Bearer {server.key}", "content-type": "application/json"},
    )
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
