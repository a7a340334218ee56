"""End to end: kill an agent; its replica is rescheduled; no duplicate once the agent returns.

Two real agents, real Docker, a real llama-server (the locally built image, the tiny GGUF),
the deployment reconciler with the node sweep in a thread (see ``test_e2e_llamacpp``). The
agent holding the only replica is killed with SIGKILL (its process group): its container
keeps running (the engine does not care), the node goes unreachable, and after the
reschedule grace the replica is placed on the other node. The killed agent then comes back
with the same data directory: the container it left behind is stale and is removed, and
from then on Docker never shows two running containers for the slot.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from django.db import connection

from deployments import services
from deployments.choices import DeploymentState, ReplicaState
from deployments.models import Replica
from deployments.rollouts import LIVE
from fleet.choices import NodeState
from fleet.models import Node
from tests.deployments import e2e
from tests.fleet.agents import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


class LivenessSweep(threading.Thread):
    """``fleet.services.sweep_liveness`` every ``interval`` seconds, as beat would run it."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(name="liveness-sweep", daemon=True)
        self.interval = interval
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        from fleet.services import sweep_liveness

        try:
            while not self.stopping.wait(self.interval):
                try:
                    sweep_liveness()
                except Exception as exc:
                    self.errors.append(repr(exc))
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


class SlotWatch(threading.Thread):
    """Polls Docker: the running containers of one deployment, per slot, every 0.1 s."""

    def __init__(self, client: Any, deployment: str) -> None:
        super().__init__(name="slot-watch", daemon=True)
        self.client = client
        self.deployment = deployment
        self.stopping = threading.Event()
        self.samples: list[tuple[float, dict[str, list[str]]]] = []

    def running(self) -> dict[str, list[str]]:
        summaries = self.client.api.containers(
            filters={"label": ["fleet.managed=true", f"fleet.deployment={self.deployment}"]}
        )
        slots: dict[str, list[str]] = {}
        for summary in summaries:  # containers() without all=True: running ones only
            slot = (summary.get("Labels") or {}).get("fleet.slot", "?")
            slots.setdefault(slot, []).append((summary.get("Names") or ["?"])[0].lstrip("/"))
        return slots

    def run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(Exception):
                self.samples.append((time.monotonic(), self.running()))
            self.stopping.wait(0.1)

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)


def timeline(watch: SlotWatch, origin: float) -> list[tuple[float, dict[str, list[str]]]]:
    """The samples where what runs changed, timed from ``origin``."""
    changes: list[tuple[float, dict[str, list[str]]]] = []
    for moment, slots in watch.samples:
        if not changes or changes[-1][1] != slots:
            changes.append((round(moment - origin, 1), slots))
    return changes


def test_killed_agent_replica_is_rescheduled_and_not_duplicated_when_it_returns(stage: e2e.Stage):
    runner, ctx, docker_client = stage.runner, stage.ctx, stage.docker_client
    began = time.monotonic()
    stage.configure(
        FLEET_NODE_GRACE_SECONDS=3,
        FLEET_RESCHEDULE_GRACE_SECONDS=3,
    )
    variant = stage.publish()
    suffix = uuid.uuid4().hex[:6]
    agents = {}
    for letter in "ab":
        agent, node = e2e.start(runner, f"resched-{letter}-{suffix}")
        agents[node.pk] = agent
    loop = e2e.DeploymentLoop()
    loop.start()
    liveness = LivenessSweep()
    liveness.start()
    watch: SlotWatch | None = None
    name = f"resched-{suffix}"
    try:
        deployment = services.create_deployment(ctx, name, e2e.llamacpp_spec(variant, 1))
        why = lambda: e2e.explain(deployment, runner, loop)  # noqa: E731
        wait_until(lambda: e2e.settled(deployment, 1), 60, message=why)
        [first] = e2e.available(deployment)
        assert e2e.completion(first.host_port)["tokens_predicted"] > 0
        victim_node, victim = first.node_id, agents[first.node_id]
        [other_node] = [pk for pk in agents if pk != victim_node]
        stale_name = first.container_name

        # kill -9 the agent holding the replica: its container keeps running
        victim.kill()
        assert docker_client.containers.get(stale_name).status == "running"

        def unreachable() -> bool:
            return Node.objects.get(pk=victim_node).state == NodeState.UNREACHABLE

        wait_until(unreachable, 20, message=why)

        def rescheduled() -> Replica | None:
            rows = e2e.available(deployment)
            moved = [r for r in rows if r.node_id == other_node and r.slot == first.slot]
            return moved[0] if len(rows) == 1 and moved else None

        second = wait_until(rescheduled, 45, message=why)
        assert second.pk != first.pk
        # both agents share this host (host network): the killed agent's container still
        # holds its port, so the new replica must get another one, or its server cannot bind
        # (and the health probe would be answered by the stale container)
        assert second.host_port != first.host_port, (
            f"replica {second.pk} was given port {second.host_port}, still held on this host "
            f"by the stale container {stale_name} of replica {first.pk} ({first.state})"
        )
        assert e2e.completion(second.host_port)["tokens_predicted"] > 0
        first.refresh_from_db()
        assert first.state not in LIVE, first.state
        # the killed agent's container is still there: nobody could remove it
        assert docker_client.containers.get(stale_name).status == "running"

        # the agent returns (same data dir: same node); its stale container is removed
        watch = SlotWatch(docker_client, deployment.name)
        watch.start()
        returned_at = time.monotonic()
        runner.start(victim.name, data_dir=victim.data_dir)
        wait_until(
            lambda: Node.objects.get(pk=victim_node).state == NodeState.READY, 20, message=why
        )

        def stale_gone() -> bool:
            with contextlib.suppress(Exception):
                docker_client.containers.get(stale_name)
                return False
            return True

        wait_until(stale_gone, 20, message=why)
        gone_at = time.monotonic()
        time.sleep(6)  # a few heartbeats and many reconcile passes with both nodes ready
        watch.stop()

        after = [(t, slots) for t, slots in watch.samples if t >= gone_at]
        assert after, "the slot watch took no sample after the stale container went"
        doubled = [
            (round(t - returned_at, 1), s)
            for t, s in after
            if max(map(len, s.values()), default=0) > 1
        ]
        assert doubled == [], doubled[:5]
        # before it went, the stale container was the only extra one (no third container)
        allowed = {stale_name, second.container_name}
        extra = [
            (round(t - returned_at, 1), names)
            for t, slots in watch.samples
            for names in slots.values()
            if len(names) > 2 or not set(names) <= allowed
        ]
        assert extra == [], (allowed, extra[:5], timeline(watch, returned_at), why())
        final = watch.running()
        assert final == {str(second.slot): [second.container_name]}, final

        # the deployment stayed e2e.available: one replica, the same, still answering
        deployment.refresh_from_db()
        assert deployment.state == DeploymentState.ACTIVE
        assert [r.pk for r in e2e.available(deployment)] == [second.pk]
        assert Counter(
            Replica.objects.filter(deployment=deployment, state__in=LIVE).values_list(
                "slot", flat=True
            )
        ) == {second.slot: 1}
        assert e2e.completion(second.host_port)["tokens_predicted"] > 0
        second.refresh_from_db()
        assert second.state == ReplicaState.AVAILABLE
        assert loop.errors == [], loop.errors[-3:]
        assert liveness.errors == [], liveness.errors[-3:]
        assert time.monotonic() - began < 90, f"took {time.monotonic() - began:.0f} s"
    finally:
        if watch is not None:
            watch.stop()
        liveness.stop()
        loop.stop()
        e2e.remove_containers(docker_client, f"fleet-{name}")
