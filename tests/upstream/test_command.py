"""`manage.py simulator` serves the simulator as its own process."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.upstream_fixtures import TEST_KEY, wait_for
from upstream.fleet import get_fleet

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=0.5)
    except httpx.HTTPError:
        return False
    return True


def test_the_command_serves_a_failing_node_when_asked():
    port = free_port()
    command = [
        sys.executable, "manage.py", "simulator", "--port", str(port),
        "--chunk-delay-ms", "0", "--fail-status", "503", "--fail-retry-after", "4",
    ]  # fmt: skip
    env = {**os.environ, "MIRA_TESTING": "1"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/models"
        assert wait_for(lambda: process.poll() is None and answers(url), attempts=3000)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "mira", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {TEST_KEY}"},
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "4"
        assert response.headers["x-request-id"]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert f"Mira simulator on http://127.0.0.1:{port}/v1" in output.decode()


def test_the_command_starts_as_the_readme_says_with_no_secret_key_or_debug():
    port = free_port()
    command = [sys.executable, "manage.py", "simulator", "--port", str(port)]
    unset = ("DEBUG", "SECRET_KEY", "SECRET_KEY_FILE", "MIRA_TESTING")
    env = {name: value for name, value in os.environ.items() if name not in unset}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/models"
        started = wait_for(lambda: process.poll() is not None or answers(url), attempts=3000)
        assert started and process.poll() is None, process.stdout.read().decode()
        response = httpx.get(url, headers={"Authorization": f"Bearer {TEST_KEY}"})
        assert response.status_code == 200
        assert response.json()["data"]
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_the_upstream_fleet_fixture_is_the_process_fleet(upstream_fleet):
    assert get_fleet() is upstream_fleet
    assert upstream_fleet.is_simulator
