"""Fixtures of the quantize tests: a tiny Llama (hidden 256, SentencePiece) on the test hub,
real agents given the locally built llama.cpp tools, the e2e deployment stage."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from core.history import ChangeContext
from fleet import services as fleet_services
from fleet.choices import NodeState
from fleet.models import Node
from models_catalog.models import CatalogModel, Variant
from tests.deployments.e2e import docker_client, stage  # noqa: F401
from tests.downloads_support import control_worker, import_variant, reconciler  # noqa: F401
from tests.fleet.agents import Agent, AgentRunner, wait_until
from tests.fleet.test_agent_downloads_e2e import ctx, node_ids, plane, proxied, runner  # noqa: F401
from tests.hubserver.repos import add_repo
from tests.quantize.models import tiny_llama_256

CARD = b"---\nlicense: apache-2.0\npipeline_tag: text-generation\n---\n# tiny test model\n"


@pytest.fixture(scope="session")
def quantize_model_dir() -> Path:
    """A real tiny LlamaForCausalLM, hidden size 256 (K-quants apply), SentencePiece."""
    return tiny_llama_256()


def publish_source(hub_root: Path, change_ctx: ChangeContext, model_dir: Path) -> Variant:
    """The tiny model as a new repository on the test hub, imported into the catalog."""
    repo = f"acme/tiny-q-{uuid.uuid4().hex[:6]}"
    files: dict[str, bytes | Path] = {p.name: p for p in sorted(model_dir.iterdir()) if p.is_file()}
    files["README.md"] = CARD
    add_repo(hub_root, repo, [files])
    variant = import_variant(change_ctx, repo)
    CatalogModel.objects.filter(pk=variant.model_id).update(licence="apache-2.0")
    variant.refresh_from_db()
    assert variant.format == "safetensors", variant
    return variant


def start_quantizer(
    agents: AgentRunner, name: str, tools: Path | None, **extra: Any
) -> tuple[Agent, Node]:
    """A real agent with the llama.cpp tools path in its environment (None: no tools)."""
    _, key = fleet_services.create_join_token(ChangeContext.system("tests"), name=name)
    env = {"FLEET_LLAMA_CPP_TOOLS": str(tools)} if tools is not None else {}
    agent = agents.start(name, join_token=key, env=env, **extra)

    def ready() -> Node | None:
        if not agent.running():
            raise AssertionError(f"agent {name} exited\n{agent.tail()}")
        return Node.objects.filter(name=name, state=NodeState.READY).first()

    return agent, wait_until(ready, 60, message=agents.tails)
