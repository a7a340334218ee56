"""Fixtures of the reconciler tests: a node-queue reader and a simulated fleet clock.

Orders the reconciler sends travel through the real Celery app to the real Redis broker;
:class:`Orders` reads them back from the ``node.<id>`` queues with kombu. Nodes get large
random ids so that queues of other test databases sharing the broker never mix with ours.

The end-to-end tests' fixtures (real agents, Docker, the job workers) are imported here;
their helpers are in :mod:`tests.deployments.e2e`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from deployments import reconciler as reconciler_module
from deployments.models import Deployment, Replica
from deployments.reconciler import reconcile_deployment
from deployments.replica_reports import apply_replica_report
from fleet.choices import NodeState
from fleet.models import Node
from tests.deployments.e2e import docker_client, stage  # noqa: F401
from tests.downloads_support import control_worker, reconciler  # noqa: F401
from tests.fleet import test_agent_downloads_e2e as agent_e2e
from tests.fleet.test_agent_downloads_e2e import ctx, plane, proxied, runner  # noqa: F401

node_ids = agent_e2e.node_ids  # the agents' fixture (a plain name: ``drain`` reuses it)

START = "fleet.agent.replica_start"
STOP = "fleet.agent.replica_stop"
DOWNLOAD = "fleet.agent.download"


@dataclass
class Order:
    node_id: int
    task: str
    args: list[Any]

    @property
    def replica_id(self) -> int:
        return int(self.args[0])

    @property
    def container_name(self) -> str:
        if self.task == START:
            return str(self.args[1]["name"])
        return str(self.args[1]) if self.task == STOP else ""


class Orders:
    """Reads (and removes) the messages on the node queues of the given nodes."""

    def __init__(self, url: str) -> None:
        self.url = url

    def drain(self, node_ids: list[int]) -> list[Order]:
        from kombu import Connection

        found: list[Order] = []
        with Connection(self.url) as conn:
            for node_id in node_ids:
                queue = conn.SimpleQueue(f"node.{node_id}", no_ack=True)
                try:
                    while True:
                        try:
                            message = queue.get_nowait()
                        except queue.Empty:
                            break
                        body = message.payload
                        args = body[0] if isinstance(body, list | tuple) else body.get("args")
                        found.append(Order(node_id, message.headers["task"], list(args)))
                finally:
                    queue.close()
        return found


@pytest.fixture
def orders() -> Orders:
    return Orders(str(settings.CELERY_BROKER_URL))


class Fleet:
    """Nodes whose heartbeats (inventories) the test writes, and a clock it advances.

    ``step`` heartbeats every node that is up, runs one reconcile pass at the fleet's clock
    and returns the orders it sent. ``act`` plays the agent's part for start/stop orders:
    it lists (or removes) the container in the node's inventory and reports to the control
    plane through :func:`apply_replica_report`, as the agent's API call does.
    """

    def __init__(self, orders: Orders) -> None:
        self.orders = orders
        self.now = timezone.now()
        self.nodes: list[Node] = []
        self.down: set[int] = set()
        self.base = random.randint(10**8, 2 * 10**9)  # noqa: S311 - ids, not secrets
        self.sent: list[Order] = []

    def node(self, name: str, *, ram_gb: int = 16, **flags: Any) -> Node:
        node = Node.objects.create(
            pk=self.base + len(self.nodes),
            name=name,
            state=NodeState.READY,
            last_heartbeat_at=self.now,
            credential_prefix="slmn_x",
            credential_hash=f"hash-{name}-{self.base}",
            inventory={
                "host": {"hostname": f"{name}.example.net"},
                "cpu": {"cores": 8},
                "memory": {"total_bytes": ram_gb * 10**9, "available_bytes": ram_gb * 10**9},
                "gpus": [],
                "containers": [],
            },
            **flags,
        )
        self.nodes.append(node)
        self.orders.drain([node.pk])  # stale messages of an earlier run
        return node

    def node_ids(self) -> list[int]:
        return [n.pk for n in self.nodes]

    def heartbeat(self) -> None:
        for node in self.nodes:
            node.refresh_from_db()
            if node.pk in self.down:
                # what the liveness sweep writes once the grace period has passed
                grace = settings.FLEET_NODE_GRACE_SECONDS
                last = node.last_heartbeat_at
                if (
                    node.state == NodeState.READY
                    and last
                    and (self.now - last).total_seconds() > grace
                ):
                    node.state = NodeState.UNREACHABLE
                    node.state_changed_at = last + timedelta(seconds=grace)
                    node.save(update_fields=["state", "state_changed_at"])
                continue
            node.last_heartbeat_at = self.now
            node.state = NodeState.READY
            node.save(update_fields=["last_heartbeat_at", "state"])

    def step(self, seconds: float = 0.0, deployment: Deployment | None = None) -> list[Order]:
        self.now += timedelta(seconds=seconds)
        self.heartbeat()
        if deployment is not None:
            assert reconcile_deployment(deployment.pk, now=self.now)
        sent = self.orders.drain(self.node_ids())
        self.sent += sent
        return sent

    def sweep(self) -> list[tuple[int, str]]:
        from deployments.node_sweep import sweep_nodes

        self.heartbeat()
        return sweep_nodes(now=self.now)

    # the agent's part -------------------------------------------------------------------
    def containers(self, node: Node) -> list[dict[str, Any]]:
        node.refresh_from_db()
        return list((node.inventory or {}).get("containers") or [])

    def set_containers(self, node: Node, containers: list[dict[str, Any]]) -> None:
        node.refresh_from_db()
        inventory = dict(node.inventory or {})
        inventory["containers"] = containers
        node.inventory = inventory
        node.save(update_fields=["inventory"])

    def run_container(self, node: Node, name: str, labels: dict[str, str], **extra: Any) -> dict:
        created = extra.pop("created", None) or self.now
        container = {
            "id": f"{abs(hash(name)) % 16**12:012x}",
            "name": name,
            "image": "slm-fleet/llama-server:local",
            "state": "running",
            "status": "Up 1 second",
            "created": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "labels": {"fleet.managed": "true", "fleet.node": str(node.pk), **labels},
            **extra,
        }
        others = [c for c in self.containers(node) if c["name"] != name]
        self.set_containers(node, [*others, container])
        return container

    def act(self, sent: list[Order], *, healthy: bool = True) -> None:
        for order in sent:
            node = Node.objects.get(pk=order.node_id)
            if order.task == START:
                spec = order.args[1]
                self.run_container(node, spec["name"], spec["labels"])
                state = "healthy" if healthy else "starting"
                apply_replica_report(
                    node, order.replica_id, {"state": state, "container_id": "c0ffee"}
                )
            elif order.task == STOP:
                self.set_containers(
                    node, [c for c in self.containers(node) if c["name"] != order.container_name]
                )
                if order.replica_id:
                    apply_replica_report(node, order.replica_id, {"state": "stopped"})

    def settle(self, deployment: Deployment, *, passes: int = 30, seconds: float = 6) -> None:
        """Passes (agent acting on every order) until the deployment's rollout is done."""
        for _ in range(passes):
            self.act(self.step(seconds, deployment))
            deployment.refresh_from_db()
            if (
                deployment.stable_revision_id == deployment.current_revision_id
                and not Replica.objects.filter(
                    deployment=deployment,
                    state__in=["pending", "downloading", "starting", "healthy", "stopping"],
                ).exists()
            ):
                return


@pytest.fixture
def fleet(orders: Orders, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    cache.clear()
    simulated = Fleet(orders)
    # the passes that changes run in their own transaction use the simulated clock too
    monkeypatch.setattr(reconciler_module, "clock", lambda: simulated.now)
    return simulated


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
