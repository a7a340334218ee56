"""Fixtures of the gateway tests: real llama-server replicas and the served web app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deployments.e2e import docker_client, stage  # noqa: F401
from tests.downloads_support import control_worker, reconciler  # noqa: F401
from tests.fleet.test_agent_downloads_e2e import (  # noqa: F401
    ctx,
    node_ids,
    plane,
    proxied,
    runner,
)
from tests.gateway.support import LlamaReplicas, ServedApp


@pytest.fixture
def replicas(
    llama_server_image: str, tiny_gguf: Path, request: pytest.FixtureRequest
) -> Iterator[LlamaReplicas]:
    started = LlamaReplicas(llama_server_image, tiny_gguf, request.node.nodeid)
    yield started
    started.remove_all()


@pytest.fixture
def served(transactional_db: None, settings: Any) -> Iterator[ServedApp]:
    settings.FLEET_GATEWAY_EJECT_SECONDS = 1
    app = ServedApp().start()
    yield app
    app.stop()
