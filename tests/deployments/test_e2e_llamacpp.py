"""End to end: a llama.cpp deployment on two real agents, real Docker, a real llama-server.

The tiny GGUF is published on the test upstream hub, imported into the catalog, downloaded
by the agents through the live server's mirror; the deployment reconciler (with the node
sweep) runs in a thread every 0.2 s, as beat would run it. Every container the test started
is checked against the hardening policy, then removed by id.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connection

from deployments import services
from deployments.choices import DeploymentState, ReplicaState, RolloutState
from deployments.models import Deployment, DeploymentRevision, Replica, Rollout
from deployments.rollouts import LIVE
from deployments.runtimes.policy import hardening_violations
from models_catalog.models import CatalogModel
from tests import downloads_support
from tests.downloads_support import import_variant
from tests.fleet.agents import AgentRunner, wait_until
from tests.fleet.test_agent_downloads_e2e import (  # noqa: F401
    ctx,
    node_ids,
    plane,
    proxied,
    runner,
    start,
)
from tests.hubserver.repos import add_repo
from tests.runtimes.fixtures import llama_cpp_tools, llama_server_image, tiny_gguf  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]
control_worker = downloads_support.control_worker
reconciler = downloads_support.reconciler


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


def revise(deployment: Deployment, **changes: Any) -> Deployment:
    """A new revision (ORM: services.update_spec fails on PostgreSQL today, see the DB tests)."""
    from deployments.spec import merge_spec, normalize_spec

    deployment.refresh_from_db()
    spec = normalize_spec(merge_spec(dict(deployment.current_revision.spec), changes))
    last = deployment.revisions.order_by("-number").first()
    revision = DeploymentRevision.objects.create(
        deployment=deployment,
        number=last.number + 1,
        spec=spec,
        variant_id=spec["variant"],
        runtime=spec["runtime"],
        author_type="user",
        author_name="test",
    )
    Deployment.objects.filter(pk=deployment.pk).update(current_revision=revision)
    deployment.refresh_from_db()
    return deployment


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


def test_llamacpp_deployment_end_to_end(
    settings,
    runner,  # noqa: F811
    control_worker,
    reconciler,
    ctx,  # noqa: F811
    hub_root: Path,
    tiny_gguf: Path,  # noqa: F811
    llama_server_image: str,  # noqa: F811
    docker_client,
):
    settings.FLEET_IMAGE_LLAMACPP = llama_server_image
    settings.FLEET_ORPHAN_GRACE_SECONDS = 2
    settings.FLEET_REPLICA_START_WAIT_SECONDS = 2
    settings.FLEET_REPLICA_RESEND_SECONDS = 3
    repo = f"acme/tiny-gguf-{uuid.uuid4().hex[:6]}"
    add_repo(hub_root, repo, [{"tiny-F16.gguf": tiny_gguf}])
    variant = import_variant(ctx, repo)
    CatalogModel.objects.filter(pk=variant.model_id).update(licence="apache-2.0")  # allowed
    suffix = uuid.uuid4().hex[:6]
    (_, node_a), (_, node_b) = start(runner, f"e2e-a-{suffix}"), start(runner, f"e2e-b-{suffix}")
    loop = DeploymentLoop()
    loop.start()
    try:
        deployment = services.create_deployment(
            ctx,
            f"e2e-{suffix}",
            {
                "variant": variant.pk,
                "runtime": "llamacpp",
                "replicas": 2,
                "runtime_args": {"context_size": 256, "threads": 1},
                "strategy": {
                    "max_surge": 1,
                    "max_unavailable": 0,
                    "min_healthy_seconds": 1,
                    "healthy_deadline_seconds": 30,
                    "progress_deadline_seconds": 60,
                },
            },
        )
        why = lambda: explain(deployment, runner, loop)  # noqa: E731
        wait_until(lambda: settled(deployment, 2), 90, message=why)
        first = available(deployment)
        assert {r.node_id for r in first} == {node_a.pk, node_b.pk}
        assert len({r.host_port for r in first}) == 2  # two agents, one host: ports differ
        for replica in first:
            assert completion(replica.host_port)["tokens_predicted"] > 0

        # rolling update under load: zero failed requests
        failures: list[str] = []
        served = [0]
        stop_load = threading.Event()

        def load() -> None:
            try:
                while not stop_load.is_set():
                    ports = [r.host_port for r in available(deployment)]
                    if not ports:
                        failures.append("no available replica")
                        time.sleep(0.05)
                        continue
                    port = ports[served[0] % len(ports)]
                    try:
                        if completion(port)["tokens_predicted"] <= 0:
                            failures.append(f"{port}: no tokens")
                        served[0] += 1
                    except requests.RequestException as exc:
                        failures.append(f"{port}: {exc}")
            finally:
                connection.close()

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        deployment = revise(deployment, runtime_args={"context_size": 512, "threads": 1})
        r2 = deployment.current_revision_id
        wait_until(lambda: settled(deployment, 2), 90, message=why)
        stop_load.set()
        loader.join(30)
        assert served[0] > 0
        assert failures == [], failures[:5]
        assert {r.revision_id for r in available(deployment)} == {r2}

        # a crashing revision (an image without llama-server) reverts by itself
        deployment = revise(deployment, image="fleet-test/busybox:latest")
        bad = deployment.current_revision_id

        def reverted() -> bool:
            deployment.refresh_from_db()
            return deployment.current_revision_id == r2

        wait_until(reverted, 60, message=why)
        failed = Rollout.objects.get(deployment=deployment, to_revision_id=bad)
        assert failed.state == RolloutState.FAILED
        wait_until(lambda: settled(deployment, 2), 60, message=why)
        assert deployment.state == DeploymentState.ACTIVE

        # kill a container by hand: replaced
        victim = available(deployment)[0]
        docker_client.containers.get(victim.container_name).kill()

        def replaced() -> bool:
            victim.refresh_from_db()
            return victim.state not in LIVE and settled(deployment, 2)

        wait_until(replaced, 60, message=why)

        # a labelled orphan is removed after the grace period
        orphan = docker_client.containers.run(
            "fleet-test/busybox:latest",
            ["sleep", "300"],
            name=f"fleet-orphan-{suffix}",
            labels={
                "fleet.managed": "true",
                "fleet.node": str(node_a.pk),
                "fleet.replica": "987654321",
                "fleet.test-exempt": "a fake orphan, removed by the node sweep",
            },
            network_mode="none",
            init=True,
            detach=True,
        )

        def orphan_gone() -> bool:
            try:
                docker_client.containers.get(orphan.id)
            except Exception:
                return True
            return False

        wait_until(orphan_gone, 30, message=why)
        for replica in available(deployment):
            assert completion(replica.host_port)["tokens_predicted"] > 0

        # every container the fleet started is hardened
        started = docker_client.containers.list(all=True, filters={"label": "fleet.managed=true"})
        ours = [c for c in started if c.labels.get("fleet.deployment") == deployment.name]
        assert ours
        for container in ours:
            container.reload()
            assert hardening_violations(container.attrs) == [], container.name
    finally:
        loop.stop()
        for container in docker_client.containers.list(
            all=True, filters={"label": "fleet.managed=true"}
        ):
            if container.name.startswith((f"fleet-e2e-{suffix}", f"fleet-orphan-{suffix}")):
                with contextlib.suppress(Exception):
                    container.remove(force=True)
