"""The OpenAPI schema: generated without warnings, valid, and the committed copy is current."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from drf_spectacular.drainage import GENERATOR_STATS

COMMITTED = Path(settings.BASE_DIR) / "docs" / "openapi.yaml"
REGENERATE = (
    "regenerate it with `make schema` (manage.py spectacular --file docs/openapi.yaml "
    "--validate --fail-on-warn) and commit docs/openapi.yaml"
)


def _spectacular(path: Path, *options: str) -> tuple[str, Exception | None]:
    """Run the spectacular command; return what it printed on stderr and any failure."""
    GENERATOR_STATS.reset()  # warnings are cached process-wide and printed once otherwise
    stderr = io.StringIO()
    failure: Exception | None = None
    try:
        with contextlib.redirect_stderr(stderr):
            call_command("spectacular", *options, "--file", str(path), stderr=stderr)
    except CommandError as exc:
        failure = exc
    finally:
        GENERATOR_STATS.reset()
    return stderr.getvalue(), failure


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The schema as the code produces it now (validated, warnings allowed)."""
    path = tmp_path_factory.mktemp("schema") / "openapi.yaml"
    output, failure = _spectacular(path, "--validate")
    assert failure is None, f"the schema does not validate: {failure}\n{output}"
    return path


@pytest.fixture(scope="module")
def schema(generated: Path) -> dict[str, Any]:
    return yaml.safe_load(generated.read_text())


def test_schema_generates_without_warnings_or_errors(tmp_path: Path) -> None:
    path = tmp_path / "openapi.yaml"
    output, failure = _spectacular(path, "--validate", "--fail-on-warn")
    assert failure is None and not output.strip(), (
        "drf-spectacular reported problems (fix them in the views/serializers, e.g. with "
        f"@extend_schema or @extend_schema_field):\n{output}\n{failure or ''}"
    )
    assert path.exists() and path.stat().st_size > 0


def test_committed_schema_is_current(generated: Path) -> None:
    assert COMMITTED.exists(), f"docs/openapi.yaml is missing; {REGENERATE}"
    assert generated.read_text() == COMMITTED.read_text(), (
        f"docs/openapi.yaml is out of date with the code; {REGENERATE}"
    )


def test_schema_declares_bearer_authentication(schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]
    bearer = [
        s for s in schemes.values() if s.get("type") == "http" and s.get("scheme") == "bearer"
    ]
    assert bearer, f"no HTTP bearer security scheme in {schemes}"
    assert "bearerAuth" in schemes
    operations = [
        (path, method, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict)
    ]
    assert operations
    # Every operation for people accepts the personal token; /agent/ endpoints are for node
    # agents, which authenticate with their own credential.
    unprotected = [
        f"{method.upper()} {path}"
        for path, method, op in operations
        if "/agent/" not in path
        and not any("bearerAuth" in requirement for requirement in op.get("security", []))
    ]
    assert not unprotected, f"operations that do not accept the bearer token: {unprotected}"
    anonymous = [
        f"{method.upper()} {path}"
        for path, method, op in operations
        if "/agent/" not in path and {} in op.get("security", [])
    ]
    assert not anonymous, f"operations documented as callable without credentials: {anonymous}"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value.rsplit("/", 1)[-1]
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _closure(names: set[str], components: dict[str, Any]) -> set[str]:
    """Every component reachable from ``names`` through $refs."""
    seen: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in seen or name not in components:
            continue
        seen.add(name)
        pending.extend(_refs(components[name]))
    return seen


def _operations(paths: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in paths.items():
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                yield path, method, op


def test_secret_values_appear_only_in_requests(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    secret_ops = [op for path, _, op in _operations(schema["paths"]) if "/secrets/" in path]
    assert secret_ops, "no secrets endpoints in the schema"

    secret_requests = _closure(
        {ref for op in secret_ops for ref in _refs(op.get("requestBody", {}))}, components
    )
    with_value = {n for n in secret_requests if "value" in components[n].get("properties", {})}
    assert with_value, "the secret create/update request bodies should accept `value`"

    in_responses = _closure(
        {ref for _, _, op in _operations(schema["paths"]) for ref in _refs(op["responses"])},
        components,
    )
    leaking = sorted(with_value & in_responses)
    assert not leaking, f"request components holding a secret `value` used in responses: {leaking}"

    returned = _closure({ref for op in secret_ops for ref in _refs(op["responses"])}, components)
    assert returned, "the secrets endpoints should document their responses"
    for name in returned:
        properties = components[name].get("properties", {})
        assert "value" not in properties, f"secrets responses expose {name}.value"
        assert "ciphertext" not in properties, f"secrets responses expose {name}.ciphertext"
