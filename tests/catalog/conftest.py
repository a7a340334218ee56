"""Fixtures of the catalog tests: the test hub as FLEET_HF_ENDPOINT, contexts, repos.

Everything talks to the real huggingface_hub client against ``tests/hubserver`` (the
``upstream_hub`` fixture); nothing here fakes the hub.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from core.history import ChangeContext
from tests.hubserver.repos import add_repo


@pytest.fixture
def hub(settings: Any, upstream_hub: str) -> str:
    """The test hub, configured as the upstream for this test."""
    settings.FLEET_HF_ENDPOINT = upstream_hub
    return upstream_hub


@pytest.fixture
def ctx(operator_user: Any) -> ChangeContext:
    return ChangeContext.for_user(operator_user, reason="testing the catalog")


def card(licence: str) -> bytes:
    return f"---\nlicense: {licence}\npipeline_tag: text-generation\n---\n# test\n".encode()


@pytest.fixture
def moving_repo(hub_root: Path, tiny_model_dir: Path) -> dict[str, Any]:
    """A fresh repository with two commits whose ``main`` points at the first one.

    ``point_main_at(1)`` moves the branch to the second commit (the test hub reads refs on
    every request): config.json changes (max context doubled), tokenizer.json is removed and
    NOTES.md is added.
    """
    repo_id = f"fleet-test/moving-{uuid.uuid4().hex[:8]}"
    files = {p.name: p for p in tiny_model_dir.iterdir() if p.is_file()}
    config = json.loads((tiny_model_dir / "config.json").read_text())
    longer = {**config, "max_position_embeddings": config["max_position_embeddings"] * 2}
    first = {**files, "README.md": card("apache-2.0")}
    second = {k: v for k, v in first.items() if k != "tokenizer.json"}
    second["config.json"] = json.dumps(longer).encode()
    second["NOTES.md"] = b"release notes\n"
    shas = add_repo(hub_root, repo_id, [first, second])
    refs = hub_root.joinpath(*repo_id.split("/"), "refs.json")

    def point_main_at(index: int) -> str:
        refs.write_text(json.dumps({"main": shas[index]}))
        return shas[index]

    point_main_at(0)
    return {"repo_id": repo_id, "commits": shas, "point_main_at": point_main_at}
