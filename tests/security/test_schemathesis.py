"""schemathesis against /api/schema/ as an admin, an operator and a viewer (issue 16).

Each persona gets a fresh database with a little of everything in it (the tiny model in the
catalog and the store, a node, a deployment of the model) and the schemathesis CLI runs
every operation of the schema the server itself serves: its examples, the coverage phase,
fuzzing, and the stateful phase over the links it infers (the coverage phase as the admin
only, see PHASES). Two checks must hold on every
answer: no 5xx, and every answer matches the schema for its status code.

The seed is random unless ``FLEET_SCHEMATHESIS_SEED`` names one; it is printed, kept in
``var/test/artifacts/schemathesis-<persona>.log`` with the whole CLI output, and named in
the failure message, so a failure can be replayed:
``FLEET_SCHEMATHESIS_SEED=<seed> scripts/test tests/security -k <persona>``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from core.choices import Role, TokenScope
from core.history import ChangeContext
from core.models import User

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(settings.BASE_DIR) / "var" / "test" / "artifacts"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = "not_a_server_error,response_schema_conformance"
# Examples per operation and phase: enough for every operation to see valid and invalid
# input, small enough that the three personas stay within about three minutes here.
MAX_EXAMPLES = int(os.environ.get("FLEET_SCHEMATHESIS_EXAMPLES", "8"))
# The coverage phase (every boundary and wrong type of every parameter, ~70 s here) runs as
# the admin, who reaches every code path; an operator and a viewer get the examples, fuzzing
# and stateful phases, which are there to prove their 403s and reads hold the schema too.
PHASES = {
    "admin": "examples,coverage,fuzzing,stateful",
    "operator": "examples,fuzzing,stateful",
    "viewer": "examples,fuzzing,stateful",
}
RUN_TIMEOUT_S = 420


@pytest.fixture
def seeded(
    admin_user: User, mirror_model: Any, node_credential: str, settings: Any, upstream_hub: str
) -> None:
    """Something for the operations to find: the tiny model with its files in the store, a
    joined node, a ready node holding a GGUF variant and a deployment of it (no worker runs
    here, so it stays as its first pass left it); the catalog search goes to the test hub."""
    from tests.deployments import builders

    settings.FLEET_HF_ENDPOINT = upstream_hub
    variant = builders.gguf_variant()
    builders.holds(builders.node("fuzz-node"), variant)
    builders.deploy(admin_user, "fuzzed", variant)


def _token(user: User) -> str:
    from core import services

    scope = TokenScope.READ if user.role == Role.VIEWER else TokenScope.WRITE
    _, key = services.create_token(
        ChangeContext.for_user(user), owner=user, name="schemathesis", scope=scope
    )
    return key


@pytest.mark.parametrize("persona", ["viewer", "operator", "admin"])
def test_every_operation_keeps_to_the_schema_without_server_errors(
    persona: str,
    personas: dict[str, User | None],
    seeded: None,
    purge_broker: None,
    live_server: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = personas[persona]
    assert user is not None
    seed = int(os.environ.get("FLEET_SCHEMATHESIS_SEED") or secrets.randbelow(2**31))
    log = ARTIFACTS / f"schemathesis-{persona}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(SCHEMATHESIS),
        "--no-color",
        "run",
        f"{live_server.url}/api/schema/?format=json",
        "--header",
        f"Authorization: Bearer {_token(user)}",
        # a fresh connection per request: on a kept-alive one the test server's small writes
        # meet delayed ACKs, 47 ms a request instead of 11 ms here
        "--header",
        "Connection: close",
        "--checks",
        CHECKS,
        "--phases",
        PHASES[persona],
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(seed),
        # one worker: hypothesis's lambda descriptions are not thread-safe on Python 3.11
        # ("AST constructor recursion depth mismatch" errors with two)
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--output-truncate",
        "false",
        "--report",
        "junit",
        "--report-junit-path",
        str(ARTIFACTS / f"schemathesis-{persona}.xml"),
    ]
    print(f"schemathesis as {persona}, seed {seed}; log in {log}")
    result = subprocess.run(
        command,
        cwd=tmp_path,  # its report and hypothesis database stay out of the checkout
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, "NO_COLOR": "1"},
    )
    output = result.stdout + result.stderr
    log.write_text(f"seed {seed}\n$ {' '.join(command[:4])} …\n{output}")
    with capsys.disabled():
        print(_summary(output, persona, seed))
    assert result.returncode == 0, (
        f"schemathesis as {persona} found failures (seed {seed}; replay with "
        f"FLEET_SCHEMATHESIS_SEED={seed} scripts/test tests/security -k {persona}; "
        f"whole output in {log}):\n{_failures(output)}"
    )


def _summary(output: str, persona: str, seed: int) -> str:
    lines = [line for line in output.splitlines() if " generated, " in line]
    return f"\nschemathesis {persona} (seed {seed}): {lines[-1].strip() if lines else '?'}"


def _failures(output: str, limit: int = 12_000) -> str:
    """The FAILURES and ERRORS sections of the CLI output (or its tail)."""
    for marker in (" ERRORS ", " FAILURES "):
        at = output.find(marker)
        if at != -1:
            return output[max(0, at - 40) :][:limit]
    return output[-limit:]
