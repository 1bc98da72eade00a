"""A prepared chat call to a running simulator, for the benchmark's tests."""

import json
from urllib.parse import urlsplit

from bench.client import build_request

CHAT = {"model": "mira", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}


def chat_call(server, *, key: bool = True) -> tuple[str, int, bytes]:
    """(host, port, raw request) of a small chat call to `server`, with its key or without."""
    url = urlsplit(server.base_url)
    host, port = url.hostname, url.port
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {server.key}"
    raw = build_request(host, port, "/v1/chat/completions", json.dumps(CHAT).encode(), headers)
    return host, port, raw
