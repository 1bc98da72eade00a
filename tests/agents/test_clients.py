"""The real coding agents, installed from npm at the versions in package.json (`make
test` installs them), each run once against a live console on the simulator: every one
prints a reply, and the console answered each of their calls with 200.

They run in a network namespace with nothing but loopback (tests/agents/run_clients.py),
so they cannot reach anything off this machine, whatever they would try.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.agents.run_clients import BIN, CLIENT_SECONDS, ROOT

SIMULATED = "This is the Mira simulator"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    missing = [name for name in ("claude", "codex", "opencode") if not (BIN / name).exists()]
    assert not missing, f"{', '.join(missing)} not installed: `make test` installs them (npm)"
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to give the agents a network of their own"
    # A new network namespace needs root, or a user namespace of one's own.
    isolate = [unshare, "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    work = tmp_path_factory.mktemp("agents")
    done = subprocess.run(
        [*isolate, sys.executable, "-m", "tests.agents.run_clients", str(work)],
        cwd=ROOT, capture_output=True, text=True, timeout=CLIENT_SECONDS * 6,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def _calls(log: str) -> list[tuple[str, int]]:
    """The console's /v1 calls, as (path, status), from its access log."""
    return [
        (path, int(status))
        for path, status in re.findall(r"^HTTP \w+ (/v1/\S*) (\d{3}) ", log, re.MULTILINE)
    ]


@pytest.mark.parametrize(
    ("run", "reply"),
    [
        ("claude", SIMULATED),
        ("claude-tool", "claude-was-here"),
        ("codex", SIMULATED),
        ("codex-tool", "The tool exec_command returned"),
        ("opencode", SIMULATED),
    ],
)
def test_each_agent_prints_a_reply(runs, run, reply):
    result = runs["runs"][run]
    assert result["code"] == 0, result
    assert reply in result["stdout"], result


def test_the_console_answered_every_call_of_theirs_with_200(runs):
    calls = _calls(runs["log"])
    paths = {path.split("?")[0] for path, _ in calls}
    assert {"/v1/messages", "/v1/responses", "/v1/chat/completions"} <= paths
    assert [call for call in calls if call[1] != 200] == []
