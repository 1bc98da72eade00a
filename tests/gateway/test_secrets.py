"""A key's secret never appears in a response body or in the logs."""

import logging

import httpx

from console.models import ApiKey
from upstream.fleet import get_fleet

CHAT = {"model": "mira", "messages": [{"role": "user", "content": "hi"}]}


def test_secrets_never_appear_in_bodies_or_logs(console_url, api_key, caplog, upstream_fleet):
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": f"Bearer {api_key}"}
    bodies = [
        httpx.post(f"{console_url}/chat/completions", json=CHAT, headers=headers).text,
        httpx.post(f"{console_url}/chat/completions", json={}, headers=headers).text,
        httpx.post(
            f"{console_url}/chat/completions", json=CHAT, headers=headers | {"x-sim-status": "500"}
        ).text,
        httpx.get(f"{console_url}/models", headers={"x-api-key": api_key[:-1] + "0"}).text,
    ]
    ApiKey.objects.get().revoke()
    bodies.append(httpx.post(f"{console_url}/chat/completions", json=CHAT, headers=headers).text)
    node_key = upstream_fleet.nodes[0].config.api_key
    for text in [*bodies, caplog.text]:
        assert api_key not in text and api_key[8:] not in text
        assert node_key not in text
    assert ApiKey.objects.filter(key_hash__contains=api_key[8:20]).count() == 0


def test_the_node_key_is_not_in_the_fleet_state(upstream_fleet):
    state = str(get_fleet().state())
    assert upstream_fleet.nodes[0].config.api_key not in state
