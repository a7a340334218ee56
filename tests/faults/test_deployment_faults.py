"""Faults during the life of a deployment, each checked by the one invariant checker.

Two real agents, real Docker, real llama-server replicas of the tiny GGUF, the reconciler and
the liveness sweep in threads as beat runs them. Every write goes through the real API with
a request id (the checker's ledger); ``docker ps`` and the replica rows are sampled every
100 ms while the fault happens. See tests/faults/invariants.py for the promises checked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from deployments.choices import ReplicaState
from deployments.models import Deployment, Replica
from fleet.choices import NodeState
from fleet.models import Node
from tests.deployments import e2e
from tests.deployments.test_e2e_reschedule import LivenessSweep
from tests.faults import invariants
from tests.fleet.agents import Agent, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

DESIRED = 2
SURGE = 1
CONVERGE_S = 90


@dataclass
class FaultRun:
    stage: e2e.Stage
    ledger: invariants.Ledger
    variant: Any
    agents: dict[int, Agent]
    loop: e2e.DeploymentLoop
    liveness: LivenessSweep
    name: str
    deployment: Deployment | None = None
    watch: invariants.BoundsWatch | None = None

    def why(self) -> str:
        assert self.deployment is not None
        return e2e.explain(self.deployment, self.stage.runner, self.loop)

    def deploy(self) -> Deployment:
        """Create it through the API, wait until it runs, then start watching the bounds."""
        answer = self.ledger.call(
            "POST",
            "/api/v1/deployments/",
            {"name": self.name, "spec": e2e.llamacpp_spec(self.variant, DESIRED)},
        )
        assert answer.status_code == 201, answer.text
        self.deployment = Deployment.objects.get(pk=answer.json()["id"])
        wait_until(lambda: e2e.settled(self.deployment, DESIRED), 60, message=self.why)
        self.watch = invariants.BoundsWatch(self.stage.docker_client, self.deployment)
        self.watch.start()
        wait_until(lambda: len(self.watch.samples) > 2, 10)
        self.watch.mark_converged()
        return self.deployment

    def update(self, changes: dict[str, Any]) -> None:
        assert self.deployment is not None
        answer = self.ledger.call(
            "PATCH", f"/api/v1/deployments/{self.deployment.pk}/", {"spec": changes}
        )
        assert answer.status_code == 200, answer.text

    def check(self, *, expect: str = "converged", unavailable: int = 0) -> str:
        assert self.deployment is not None and self.watch is not None
        result = invariants.wait_outcome(self.deployment, CONVERGE_S, self.why)
        time.sleep(1)  # a few more samples of the settled state
        self.watch.stop()
        broken = invariants.violations(
            ledger=self.ledger,
            watch=self.watch,
            deployment=self.deployment,
            client=self.stage.docker_client,
            result=result,
            surge=SURGE,
            unavailable=unavailable,
            desired=lambda _at: DESIRED,
            expect=expect,
        )
        assert broken == [], "\n".join([*broken, self.why()])
        assert self.loop.errors == [], self.loop.errors[-3:]
        return result


@pytest.fixture
def fault_run(
    stage: e2e.Stage, live_server: Any, admin_user: Any, token_for: Any
) -> Iterator[FaultRun]:
    stage.configure(FLEET_NODE_GRACE_SECONDS=3, FLEET_RESCHEDULE_GRACE_SECONDS=3)
    variant = stage.publish()
    suffix = uuid.uuid4().hex[:6]
    agents = {}
    for letter in "ab":
        agent, node = e2e.start(stage.runner, f"fault-{letter}-{suffix}")
        agents[node.pk] = agent
    loop, liveness = e2e.DeploymentLoop(), LivenessSweep()
    loop.start()
    liveness.start()
    run = FaultRun(
        stage=stage,
        ledger=invariants.Ledger(live_server.url, token_for(admin_user)),
        variant=variant,
        agents=agents,
        loop=loop,
        liveness=liveness,
        name=f"fault-{suffix}",
    )
    try:
        yield run
    finally:
        if run.watch is not None:
            run.watch.stop()
        liveness.stop()
        loop.stop()
        e2e.remove_containers(stage.docker_client, f"fleet-{run.name}")


def _new_replica(run: FaultRun) -> Replica | None:
    assert run.deployment is not None
    run.deployment.refresh_from_db()
    return (
        Replica.objects.filter(
            deployment=run.deployment,
            revision_id=run.deployment.current_revision_id,
            node__isnull=False,
        )
        .exclude(state__in=(ReplicaState.PENDING,))
        .first()
    )


def test_agent_sigkill_mid_rollout(fault_run: FaultRun) -> None:
    """The agent placing the new revision's first replica is killed (SIGKILL of its process
    group) and comes back 6 s later with its data: the rollout still completes."""
    run = fault_run
    run.deploy()
    run.update({"env": {"ROLLOUT": "after-kill"}})
    replica = wait_until(lambda: _new_replica(run), 30, message=run.why)
    victim = run.agents[replica.node_id]
    on_victim = Replica.objects.filter(
        deployment=run.deployment, node_id=replica.node_id, state=ReplicaState.AVAILABLE
    ).count()
    victim.kill()
    wait_until(
        lambda: Node.objects.get(pk=replica.node_id).state == NodeState.UNREACHABLE,
        20,
        message=run.why,
    )
    time.sleep(3)
    run.stage.runner.start(victim.name, data_dir=victim.data_dir)
    # the node's available replicas are lost with it until rescheduled (max_unavailable is 0)
    assert run.check(unavailable=on_victim) == "converged"
    assert run.deployment is not None
    rows = e2e.available(run.deployment)
    assert {r.revision_id for r in rows} == {run.deployment.current_revision_id}
    assert all(e2e.completion(r.host_port)["tokens_predicted"] > 0 for r in rows)


def test_revision_whose_image_is_missing_reverts(fault_run: FaultRun) -> None:
    """A revision naming an image no node has (and no registry can give: a closed port on
    loopback) fails its rollout and is reverted, the stable replicas serving all along."""
    run = fault_run
    deployment = run.deploy()
    stable = deployment.current_revision_id
    run.update({"image": "127.0.0.1:9/fleet-test/missing:never"})
    assert run.check() == "converged"
    reasons = invariants.failed_rollouts(deployment)
    assert reasons and any(
        "the image 127.0.0.1:9/fleet-test/missing:never is not on this node" in r for r in reasons
    ), reasons
    rows = e2e.available(deployment)
    assert len(rows) == DESIRED
    deployment.refresh_from_db()
    served = {r.revision.spec.get("image", "") for r in rows}
    assert served == {""} or stable in {r.revision_id for r in rows}, served


def test_replica_container_killed_after_it_was_healthy(fault_run: FaultRun) -> None:
    """A replica's container dies (SIGKILL from the engine) after passing its health gate:
    it is replaced, with no orphan and no slot running twice once it settled."""
    run = fault_run
    deployment = run.deploy()
    [first, *_] = e2e.available(deployment)
    time.sleep(5)
    run.stage.docker_client.containers.get(first.container_name).kill()
    wait_until(
        lambda: Replica.objects.get(pk=first.pk).state != ReplicaState.AVAILABLE,
        20,
        message=run.why,
    )
    # a crash is not a planned disruption: one replica may be missing until it is replaced
    assert run.check(unavailable=1) == "converged"
    assert first.pk not in {r.pk for r in e2e.available(deployment)}


def test_revision_that_never_becomes_ready_reverts(fault_run: FaultRun) -> None:
    """A revision whose container runs but never answers its health check (a process that
    only sleeps) misses its healthy deadline: its container is stopped at once, no second
    attempt of that revision starts, and the rollout is reverted."""
    run = fault_run
    deployment = run.deploy()
    run.update(
        {
            "runtime": "custom",
            "runtime_args": {  # a new runtime's arguments replace the old ones
                "image": run.stage.image,
                "entrypoint": ["/bin/sleep"],
                "command": ["3600"],
            },
            "strategy": {"healthy_deadline_seconds": 10},
        }
    )
    assert run.check() == "converged"
    reasons = invariants.failed_rollouts(deployment)
    assert reasons and any("not healthy within its deadline of 10 s" in r for r in reasons), reasons
    deployment.refresh_from_db()
    assert deployment.current_revision_id == deployment.stable_revision_id
    assert all(r.revision.spec["runtime"] == "llamacpp" for r in e2e.available(deployment))
