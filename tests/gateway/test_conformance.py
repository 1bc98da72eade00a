"""Property-based testing of the whole /v1 API against its own OpenAPI document.

Schemathesis reads /v1/openapi.json from the console served over a real socket, in front of
the simulator, and sends what the document allows and what it does not, with a key that
has every scope, the admin one too. No answer may be a 5xx, and every answer must be one
the document describes: its status, content type, headers and body; a request the
document forbids must be refused with a 4xx.

It runs Schemathesis's own command line, in a process of its own, as on any API:
deterministic (the same cases on every run, from no random seed) and bounded in examples,
in every phase (the document's examples, boundary values, fuzzing, and sequences of calls
along the links it infers, such as a key created and then revoked).
"""

import subprocess
import sys

import pytest

from console.actions import create_key
from console.models import ADMIN_SCOPE, PRODUCT_SCOPES
from gateway.openapi import document
from tests.upstream_fixtures import fleet_over
from upstream.fleet import set_fleet

CONFIG = """
[generation]
mode = "all"
deterministic = true
max-examples = 15

[cache]
enabled = false
"""


@pytest.fixture
def own_simulator(start_simulator):
    """A simulator of the run's own, as the fleet: the music and video jobs the run starts
    (ten-second videos among them) keep a simulator rendering for minutes, behind which no
    other test's jobs should wait."""
    fleet = fleet_over(start_simulator(), names=["simulator"])
    fleet.is_simulator = True
    previous = set_fleet(fleet)
    yield fleet
    set_fleet(previous)


def test_the_api_answers_as_its_openapi_document_says_and_never_with_a_5xx(
    asgi_server, own_simulator, alice, acme, tmp_path
):
    _key, secret = create_key(
        workspace=acme,
        name="conformance",
        created_by=alice,
        scopes=[*PRODUCT_SCOPES, ADMIN_SCOPE],
    )
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{asgi_server.url}/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {secret}",
            "--checks",
            "all",
            # Every check but one. `positive_data_acceptance` expects every body that the
            # document allows to be answered with a 2xx; but which models exist and what a
            # model accepts is the fleet's to say, not the document's: a well-formed body
            # that names a model no node serves is rightly a 400.
            "--exclude-checks",
            "positive_data_acceptance",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # Every operation of the document was run (but the document's own, which Schemathesis
    # leaves out).
    paths = document()["paths"]
    operations = sum(len(methods) for path, methods in paths.items() if path != "/openapi.json")
    assert f"{operations} selected / {operations} total" in run.stdout
