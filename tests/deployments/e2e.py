"""Shared setup of the end-to-end deployment tests (real agents, real Docker, llama-server).

The tiny GGUF is published on the test upstream hub and imported into the catalog
(:meth:`Stage.publish`), agents are started with :func:`start`, the deployment
reconciler with the node sweep runs in a thread (:class:`DeploymentLoop`), and the tests
wait with :func:`settled` / :func:`available`, explaining a timeout with :func:`explain`.
The fixtures (``stage``, ``docker_client`` and those of the agent tests) are made available to the
tests by ``tests/deployments/conftest.py``.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connection

from deployments.choices import ReplicaState
from deployments.models import Deployment, Replica, Rollout
from deployments.rollouts import LIVE
from models_catalog.models import CatalogModel
from tests.downloads_support import import_variant
from tests.fleet.agents import AgentRunner
from tests.fleet.test_agent_downloads_e2e import start
from tests.hubserver.repos import add_repo

__all__ = [
    "DeploymentLoop",
    "Stage",
    "available",
    "completion",
    "docker_client",
    "explain",
    "llamacpp_spec",
    "remove_containers",
    "settled",
    "stage",
    "start",
]


class DeploymentLoop(threading.Thread):
    """``reconcile_all`` (node sweep + every deployment) every ``interval`` seconds."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(name="deployment-reconciler", daemon=True)
        self.interval = interval
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        from deployments.reconciler import reconcile_all

        try:
            while not self.stopping.is_set():
                try:
                    reconcile_all()
                except Exception as exc:
                    self.errors.append(repr(exc))
                self.stopping.wait(self.interval)
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


@pytest.fixture
def docker_client() -> Iterator[Any]:
    import docker

    client = docker.from_env()
    before = {c.id for c in client.containers.list(all=True)}
    yield client
    for container in client.containers.list(all=True, filters={"label": "fleet.managed=true"}):
        if container.id not in before:
            with contextlib.suppress(Exception):
                container.remove(force=True)
    client.close()


def remove_containers(docker_client: Any, *prefixes: str) -> None:
    """Force-remove the fleet-managed containers whose name starts with one of ``prefixes``."""
    for container in docker_client.containers.list(
        all=True, filters={"label": "fleet.managed=true"}
    ):
        if container.name.startswith(prefixes):
            with contextlib.suppress(Exception):
                container.remove(force=True)


@dataclass
class Stage:
    """What an e2e test works with: agents, the hub, the llama.cpp image, Docker."""

    settings: Any
    runner: AgentRunner
    ctx: Any
    hub_root: Path
    tiny_gguf: Path
    image: str
    docker_client: Any

    def configure(self, **extra: Any) -> None:
        """The llama.cpp image and the short fleet timings of the e2e tests (``extra``: more)."""
        self.settings.FLEET_IMAGE_LLAMACPP = self.image
        for name, value in extra.items():
            setattr(self.settings, name, value)
        self.settings.FLEET_ORPHAN_GRACE_SECONDS = 2
        self.settings.FLEET_REPLICA_START_WAIT_SECONDS = 2
        self.settings.FLEET_REPLICA_RESEND_SECONDS = 3

    def publish(self) -> Any:
        """Publish the tiny GGUF on the test hub and import it; its licence allows deploying."""
        repo = f"acme/tiny-gguf-{uuid.uuid4().hex[:6]}"
        add_repo(self.hub_root, repo, [{"tiny-F16.gguf": self.tiny_gguf}])
        variant = import_variant(self.ctx, repo)
        CatalogModel.objects.filter(pk=variant.model_id).update(licence="apache-2.0")  # allowed
        return variant


@pytest.fixture
def stage(
    settings: Any,
    runner: AgentRunner,
    control_worker: str,
    reconciler: Any,
    ctx: Any,
    hub_root: Path,
    tiny_gguf: Path,
    llama_server_image: str,
    docker_client: Any,
) -> Stage:
    """The fixtures of the e2e tests, set up in this order (workers running meanwhile)."""
    return Stage(settings, runner, ctx, hub_root, tiny_gguf, llama_server_image, docker_client)


def llamacpp_spec(variant: Any, replicas: int, *, max_unavailable: int = 0) -> dict[str, Any]:
    return {
        "variant": variant.pk,
        "runtime": "llamacpp",
        "replicas": replicas,
        "runtime_args": {"context_size": 256, "threads": 1},
        "strategy": {
            "max_surge": 1,
            "max_unavailable": max_unavailable,
            "min_healthy_seconds": 1,
            "healthy_deadline_seconds": 30,
            "progress_deadline_seconds": 60,
        },
    }


def available(deployment: Deployment) -> list[Replica]:
    return list(
        Replica.objects.select_related("node").filter(
            deployment=deployment, state=ReplicaState.AVAILABLE
        )
    )


def settled(deployment: Deployment, replicas: int) -> bool:
    deployment.refresh_from_db()
    rows = list(Replica.objects.filter(deployment=deployment, state__in=LIVE))
    return (
        deployment.stable_revision_id == deployment.current_revision_id
        and len(rows) == replicas
        and all(
            r.state == ReplicaState.AVAILABLE and r.revision_id == deployment.current_revision_id
            for r in rows
        )
    )


def explain(deployment: Deployment, agents: AgentRunner, loop: DeploymentLoop) -> str:
    rows = [
        (r.pk, r.slot, r.revision.number, r.state, r.reason[:200], r.node_id, r.host_port)
        for r in Replica.objects.filter(deployment=deployment).select_related("revision")
    ]
    rollouts = [
        (r.to_revision.number, r.state, r.failure_reason)
        for r in Rollout.objects.filter(deployment=deployment)
    ]
    return f"replicas {rows}\nrollouts {rollouts}\nloop errors {loop.errors[-3:]}\n{agents.tails()}"


def completion(port: int) -> dict[str, Any]:
    answer = requests.post(
        f"http://127.0.0.1:{port}/completion",
        json={"prompt": "Hello", "n_predict": 8},
        timeout=30,
    )
    answer.raise_for_status()
    return dict(answer.json())
