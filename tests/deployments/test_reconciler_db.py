"""The deployment reconciler against the real database and the real broker.

Each test writes Node rows (their heartbeat inventories: the managed containers with the
labels the agent reports), creates a deployment through ``deployments.services``, runs
``reconcile_deployment`` at a clock it advances, and reads the orders the pass sent from the
nodes' Redis queues (kombu). The agent's part (running a container, reporting its health)
is played by :class:`tests.deployments.conftest.Fleet`.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from core.history import ChangeContext
from core.jobs import Job, JobState
from deployments import services
from deployments.choices import DeploymentState, ReplicaState, RolloutState
from deployments.models import Deployment, Replica, Rollout
from deployments.replica_reports import apply_replica_report
from deployments.rollouts import LIVE
from fleet.choices import NodeState
from models_catalog.models import NodeModel
from tests.deployments.builders import gguf_variant, holds
from tests.deployments.conftest import START, STOP, Fleet

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"min_healthy_seconds": 5, "healthy_deadline_seconds": 60, "progress_deadline_seconds": 120}


def deploy(user, variant, name="chat", *, replicas=1, strategy=None, **spec):
    body = {
        "variant": variant.pk,
        "runtime": "llamacpp",
        "replicas": replicas,
        "strategy": {**FAST, **(strategy or {})},
        "runtime_args": {"context_size": 512},
        **spec,
    }
    return services.create_deployment(ChangeContext.for_user(user), name, body, reason="test")


def update(user, deployment, **changes):
    """A spec change through the service: a new revision, as the API makes it."""
    return services.update_spec(ChangeContext.for_user(user), deployment, changes, reason="test")


def scale(deployment, replicas):
    return services.scale(ChangeContext.system("test"), deployment, replicas)


def stop(deployment):
    return services.stop(ChangeContext.system("test"), deployment)


def live(deployment) -> list[Replica]:
    return list(
        Replica.objects.filter(deployment=deployment, state__in=LIVE).order_by("slot", "pk")
    )


def by_task(sent) -> Counter:
    return Counter(order.task for order in sent)


def assert_one_live_per_slot(deployment) -> None:
    """Never two live replicas of the same revision for one slot."""
    seen = Counter((r.slot, r.revision_id) for r in live(deployment))
    assert all(count == 1 for count in seen.values()), seen


@pytest.fixture
def variant(db):
    return gguf_variant(size=50_000_000)


@pytest.fixture
def two_nodes(fleet: Fleet, variant):
    a, b = fleet.node("node-a"), fleet.node("node-b")
    holds(a, variant)
    holds(b, variant)
    return a, b


def test_initial_placement_creates_replicas_and_start_orders(fleet, two_nodes, variant, admin_user):
    deployment = deploy(admin_user, variant, replicas=2)
    sent = fleet.step(0, deployment)
    replicas = live(deployment)
    assert [r.slot for r in replicas] == [0, 1]
    assert {r.state for r in replicas} == {ReplicaState.STARTING}
    assert {r.node_id for r in replicas} == {n.pk for n in two_nodes}  # spread
    starts = [o for o in sent if o.task == START]
    assert sorted(o.replica_id for o in starts) == sorted(r.pk for r in replicas)
    for order in starts:
        replica = Replica.objects.get(pk=order.replica_id)
        spec, model, options = order.args[1], order.args[2], order.args[3]
        assert order.node_id == replica.node_id
        assert spec["name"] == replica.container_name
        assert spec["labels"]["fleet.replica"] == str(replica.pk)
        assert spec["labels"]["fleet.slot"] == str(replica.slot)
        assert model["repo_id"] == variant.model.repo_id
        assert options["port"] == replica.host_port
        assert options["wait_s"] <= 10
    # a second pass right away re-sends nothing (coalesced until the re-send period)
    assert fleet.step(1, deployment) == []
    # ... and after the re-send period the unanswered starts go again
    again = fleet.step(16, deployment)
    assert by_task(again)[START] == 2


@pytest.fixture
def broker_down(monkeypatch):
    """The control plane's broker refuses connections (a port nothing listens on)."""
    from config.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:9/0")
    monkeypatch.setattr(app, "_pool", None)  # the connection pools of the configured URL
    monkeypatch.setattr(app.amqp, "_producer_pool", None)
    return monkeypatch


def test_a_change_commits_while_the_broker_is_down_and_its_start_goes_later(
    fleet, two_nodes, variant, admin_user, broker_down
):
    deployment = deploy(admin_user, variant)  # no error: the change and its pass are committed
    (replica,) = live(deployment)
    assert replica.state == ReplicaState.STARTING and replica.node_id is not None
    broker_down.undo()  # the broker is back
    assert fleet.step(1, deployment) == [], "the lost order waits for its re-send period"
    again = fleet.step(16, deployment)
    assert [(o.task, o.replica_id) for o in again] == [(START, replica.pk)]


ALL = "0.0.0.0"  # noqa: S104 - what an operator may ask replicas to bind


@pytest.mark.parametrize(
    ("host", "bind", "endpoint"),
    [
        ({}, "127.0.0.1", "http://{name}.example.net:{port}"),  # an agent not reporting yet
        ({"address": "10.1.2.3"}, "10.1.2.3", "http://10.1.2.3:{port}"),
        ({"address": "10.1.2.3", "replica_bind": ALL}, ALL, "http://10.1.2.3:{port}"),
        ({"address": "fd00::7"}, "fd00::7", "http://[fd00::7]:{port}"),
    ],
)
def test_replicas_bind_and_are_reached_at_the_nodes_address(
    fleet, variant, admin_user, host, bind, endpoint
):
    node = fleet.node("addressed")
    node.inventory["host"].update(host)
    node.save(update_fields=["inventory"])
    holds(node, variant)
    deployment = deploy(admin_user, variant)
    (order,) = [o for o in fleet.step(0, deployment) if o.task == START]
    command = order.args[1]["command"]
    assert command[command.index("--host") + 1] == bind
    replica = Replica.objects.select_related("node").get(pk=order.replica_id)
    assert replica.endpoint == endpoint.format(name="addressed", port=replica.host_port)


def test_unschedulable_reason_is_recorded(fleet, variant, admin_user):
    fleet.node("small", ram_gb=0)
    deployment = deploy(admin_user, variant)
    assert fleet.step(0, deployment) == []
    (replica,) = live(deployment)
    assert replica.state == ReplicaState.PENDING
    assert replica.node_id is None
    assert replica.reason
    # a node that fits joins: the pending replica is placed on a later pass
    big = fleet.node("big")
    holds(big, variant)
    sent = fleet.step(1, deployment)
    replica.refresh_from_db()
    assert replica.node_id == big.pk and replica.state == ReplicaState.STARTING
    assert by_task(sent) == {START: 1}


def test_download_first_when_the_node_lacks_the_variant(fleet, variant, admin_user):
    node = fleet.node("bare")
    deployment = deploy(admin_user, variant)
    sent = fleet.step(0, deployment)
    (replica,) = live(deployment)
    assert replica.state == ReplicaState.DOWNLOADING
    assert replica.download_job_id
    assert START not in by_task(sent)
    job = Job.objects.get(pk=replica.download_job_id)
    assert job.node_id == node.pk  # dispatched once the mirror holds the files
    # still downloading: no start, the rollout clock stands still
    assert START not in by_task(fleet.step(200, deployment))
    assert Rollout.objects.get(deployment=deployment).state == RolloutState.RUNNING
    Job.objects.filter(pk=replica.download_job_id).update(state=JobState.SUCCEEDED)
    NodeModel.objects.update_or_create(
        node=node,
        variant=variant,
        defaults={"state": "present", "commit_sha": variant.model.commit_sha},
    )
    sent = fleet.step(1, deployment)
    replica.refresh_from_db()
    assert replica.state == ReplicaState.STARTING
    assert [o.replica_id for o in sent if o.task == START] == [replica.pk]


def test_health_gate_then_available_then_rollout_succeeds(fleet, two_nodes, variant, admin_user):
    deployment = deploy(admin_user, variant, replicas=2)
    fleet.act(fleet.step(0, deployment))
    assert {r.state for r in live(deployment)} == {ReplicaState.HEALTHY}
    fleet.step(2, deployment)
    assert {r.state for r in live(deployment)} == {ReplicaState.HEALTHY}  # < min_healthy
    fleet.step(5, deployment)
    assert {r.state for r in live(deployment)} == {ReplicaState.AVAILABLE}
    deployment.refresh_from_db()
    assert deployment.stable_revision_id == deployment.current_revision_id
    assert Rollout.objects.get(deployment=deployment).state == RolloutState.SUCCEEDED


def test_healthy_deadline_fails_the_replica_and_the_rollout(fleet, two_nodes, variant, admin_user):
    deployment = deploy(admin_user, variant, strategy={"auto_revert": False})
    fleet.act(fleet.step(0, deployment), healthy=False)
    fleet.step(30, deployment)
    assert live(deployment)[0].state == ReplicaState.STARTING
    fleet.step(31, deployment)
    failed = Replica.objects.get(deployment=deployment, state=ReplicaState.FAILED)
    assert "deadline" in failed.reason
    rollout = Rollout.objects.get(deployment=deployment)
    assert rollout.state == RolloutState.FAILED
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.PAUSED  # nothing stable to revert to


def _stable(fleet, user, variant, replicas=2, **strategy):
    deployment = deploy(user, variant, replicas=replicas, strategy=strategy)
    fleet.settle(deployment)
    deployment.refresh_from_db()
    assert deployment.stable_revision_id == deployment.current_revision_id
    assert [r.state for r in live(deployment)] == [ReplicaState.AVAILABLE] * replicas
    return deployment


def test_progress_deadline_fails_the_rollout_and_auto_reverts(
    fleet, two_nodes, variant, admin_user
):
    deployment = _stable(
        fleet, admin_user, variant, healthy_deadline_seconds=3600, progress_deadline_seconds=30
    )
    stable = deployment.current_revision_id
    deployment = update(admin_user, deployment, runtime_args={"context_size": 1024})
    # the new replica answers "starting" to every (re-sent) start: no progress
    for _ in range(6):
        fleet.act(fleet.step(16, deployment), healthy=False)
        deployment.refresh_from_db()
        if deployment.current_revision_id == stable:
            break
    failed = Rollout.objects.get(deployment=deployment, is_rollback=False, to_revision__number=2)
    assert failed.state == RolloutState.FAILED
    assert "no progress within 30 s" in failed.failure_reason
    assert deployment.current_revision_id == stable
    rollback = Rollout.objects.get(deployment=deployment, is_rollback=True)
    fleet.settle(deployment)
    rollback.refresh_from_db()
    assert rollback.state == RolloutState.SUCCEEDED
    assert {r.revision_id for r in live(deployment)} == {stable}


def test_failed_replica_auto_reverts_to_stable_revision(fleet, two_nodes, variant, admin_user):
    deployment = _stable(fleet, admin_user, variant)
    r1 = deployment.current_revision
    old_ids = {r.pk for r in live(deployment)}
    deployment = update(admin_user, deployment, runtime_args={"context_size": 1024})
    sent = fleet.step(0, deployment)
    new = [r for r in live(deployment) if r.pk not in old_ids]
    assert len(new) == 1  # max_surge 1, max_unavailable 0: one at a time, start-first
    assert {r.pk for r in live(deployment)} >= old_ids  # nothing old stopped yet
    (order,) = [o for o in sent if o.task == START]
    node = fleet.nodes[0].__class__.objects.get(pk=order.node_id)
    apply_replica_report(node, order.replica_id, {"state": "failed", "error": "exit 1"})
    fleet.step(1, deployment)
    deployment.refresh_from_db()
    assert deployment.current_revision_id == r1.pk
    failed = Rollout.objects.get(deployment=deployment, is_rollback=False, to_revision__number=2)
    assert failed.state == RolloutState.FAILED and "failed" in failed.failure_reason
    rollback = Rollout.objects.get(deployment=deployment, is_rollback=True)
    assert rollback.to_revision_id == r1.pk
    fleet.settle(deployment)
    rollback.refresh_from_db()
    assert rollback.state == RolloutState.SUCCEEDED
    assert {r.pk for r in live(deployment)} == old_ids  # the old replicas never stopped
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.ACTIVE


def test_failure_during_rollback_pauses_without_looping(fleet, two_nodes, variant, admin_user):
    deployment = _stable(fleet, admin_user, variant, replicas=1)
    r1 = deployment.current_revision_id
    deployment = update(admin_user, deployment, runtime_args={"context_size": 1024})
    fleet.act(fleet.step(0, deployment))
    fleet.act(fleet.step(6, deployment))  # r2 available, r1 replaced
    deployment.refresh_from_db()
    r2 = deployment.current_revision_id
    assert deployment.stable_revision_id == r2
    deployment = update(admin_user, deployment, runtime_args={"context_size": 2048})
    fleet.step(0, deployment)
    (r3_replica,) = [r for r in live(deployment) if r.revision_id not in (r1, r2)]
    apply_replica_report(r3_replica.node, r3_replica.pk, {"state": "failed", "error": "boom"})
    sent = fleet.step(1, deployment)
    deployment.refresh_from_db()
    assert deployment.current_revision_id == r2  # reverted
    # the revert's replacement fails too: the rollback fails → paused, no new rollout
    fleet.step(0, deployment)
    for replica in live(deployment):
        if replica.revision_id == r2 and replica.state == ReplicaState.STARTING:
            apply_replica_report(replica.node, replica.pk, {"state": "failed", "error": "again"})
    for order in sent:
        if order.task == START:
            apply_replica_report(
                fleet.nodes[0].__class__.objects.get(pk=order.node_id),
                order.replica_id,
                {"state": "failed", "error": "again"},
            )
    for _ in range(3):
        fleet.step(5, deployment)
    deployment.refresh_from_db()
    rollouts = list(Rollout.objects.filter(deployment=deployment).order_by("pk"))
    if deployment.state == DeploymentState.PAUSED:
        assert rollouts[-1].is_rollback and rollouts[-1].state == RolloutState.PAUSED
    # whatever happened, it did not loop: at most one rollback was started
    assert sum(1 for r in rollouts if r.is_rollback) <= 1
    assert len(rollouts) <= 4


def test_rollback_failure_pauses_the_deployment(fleet, two_nodes, variant, admin_user):
    deployment = _stable(fleet, admin_user, variant, replicas=1)
    r1 = deployment.current_revision_id
    (old,) = live(deployment)
    deployment = update(admin_user, deployment, runtime_args={"context_size": 1024})
    fleet.step(0, deployment)
    (new,) = [r for r in live(deployment) if r.pk != old.pk]
    apply_replica_report(new.node, new.pk, {"state": "failed", "error": "boom"})
    fleet.step(1, deployment)
    deployment.refresh_from_db()
    assert deployment.current_revision_id == r1
    # while rolling back, the stable replica crashes and its replacement fails too
    fleet.set_containers(old.node, [])
    fleet.step(3, deployment)
    old.refresh_from_db()
    assert old.state == ReplicaState.FAILED
    sent = fleet.step(0, deployment)
    fresh = [r for r in live(deployment) if r.revision_id == r1]
    assert fresh, sent
    for replica in fresh:
        apply_replica_report(replica.node, replica.pk, {"state": "failed", "error": "again"})
    for _ in range(3):
        fleet.step(5, deployment)
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.PAUSED
    assert "rollback" in deployment.paused_reason
    rollback = Rollout.objects.get(deployment=deployment, is_rollback=True)
    assert rollback.state == RolloutState.PAUSED
    count = Rollout.objects.filter(deployment=deployment).count()
    for _ in range(3):
        assert fleet.step(30, deployment) == [] or True
    assert Rollout.objects.filter(deployment=deployment).count() == count  # no loop


def test_newer_revision_supersedes_a_running_rollout(fleet, two_nodes, variant, admin_user):
    deployment = _stable(fleet, admin_user, variant)
    deployment = update(admin_user, deployment, runtime_args={"context_size": 1024})
    fleet.step(0, deployment)
    r2 = Rollout.objects.get(deployment=deployment, state=RolloutState.RUNNING)
    deployment = update(admin_user, deployment, runtime_args={"context_size": 2048})
    fleet.step(0, deployment)
    r2.refresh_from_db()
    assert r2.state == RolloutState.SUPERSEDED
    r3 = Rollout.objects.get(deployment=deployment, state=RolloutState.RUNNING)
    assert r3.to_revision_id == deployment.current_revision_id
    fleet.settle(deployment)
    r3.refresh_from_db()
    assert r3.state == RolloutState.SUCCEEDED
    assert {r.revision_id for r in live(deployment)} == {deployment.current_revision_id}
    assert_one_live_per_slot(deployment)


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable"), [(4, 1, 0), (4, 2, 0), (4, 0, 1), (4, 1, 2)]
)
def test_batches_respect_surge_and_unavailable(
    fleet, two_nodes, variant, admin_user, replicas, surge, unavailable
):
    deployment = _stable(
        fleet, admin_user, variant, replicas=replicas, max_surge=surge, max_unavailable=unavailable
    )
    deployment = update(admin_user, deployment, runtime_args={"context_size": 1024})
    target = deployment.current_revision_id
    for _ in range(40):
        sent = fleet.step(6, deployment)
        rows = live(deployment)
        available_slots = {r.slot for r in rows if r.state == ReplicaState.AVAILABLE}
        assert len(rows) <= replicas + surge, [(r.slot, r.state) for r in rows]
        assert len(available_slots) >= replicas - unavailable
        assert_one_live_per_slot(deployment)
        if unavailable == 0:  # start-first: no old replica stops before its slot's new one
            for order in sent:
                if order.task == STOP:
                    stopped = Replica.objects.get(pk=order.replica_id)
                    assert Replica.objects.filter(
                        deployment=deployment,
                        slot=stopped.slot,
                        revision_id=target,
                        state=ReplicaState.AVAILABLE,
                    ).exists()
        fleet.act(sent)
        deployment.refresh_from_db()
        if deployment.stable_revision_id == target:
            break
    assert deployment.stable_revision_id == target
    assert {r.revision_id for r in live(deployment)} == {target}


def test_scale_up_and_down(fleet, two_nodes, variant, admin_user):
    deployment = _stable(fleet, admin_user, variant, replicas=1)
    scale(deployment, 3)
    fleet.settle(deployment)
    assert [r.slot for r in live(deployment)] == [0, 1, 2]
    deployment.refresh_from_db()
    scale(deployment, 1)
    sent = fleet.step(0, deployment)
    stops = [o for o in sent if o.task == STOP]
    assert len(stops) == 2
    fleet.act(sent)
    fleet.step(1, deployment)
    assert [r.slot for r in live(deployment)] == [0]
    assert Replica.objects.filter(deployment=deployment, state=ReplicaState.GONE).count() == 2


def test_stop_removes_replicas(fleet, two_nodes, variant, admin_user):
    deployment = _stable(fleet, admin_user, variant)
    stop(deployment)
    sent = fleet.step(0, deployment)
    assert by_task(sent) == {STOP: 2}
    assert {r.state for r in Replica.objects.filter(deployment=deployment)} == {
        ReplicaState.STOPPING
    }
    fleet.act(sent)
    fleet.step(1, deployment)
    assert live(deployment) == []
    assert set(Replica.objects.filter(deployment=deployment).values_list("state", flat=True)) == {
        ReplicaState.GONE
    }
    for node in fleet.nodes:
        assert fleet.containers(node) == []


def test_stopping_replica_whose_stop_is_lost_is_stopped_again(
    fleet, two_nodes, variant, admin_user
):
    deployment = _stable(fleet, admin_user, variant, replicas=1)
    stop(deployment)
    assert by_task(fleet.step(0, deployment)) == {STOP: 1}  # lost: the agent never acts
    assert fleet.step(5, deployment) == []
    assert by_task(fleet.step(16, deployment)) == {STOP: 1}


def test_crashed_container_is_replaced(fleet, two_nodes, variant, admin_user):
    deployment = _stable(fleet, admin_user, variant)
    victim = live(deployment)[0]
    containers = fleet.containers(victim.node)
    for container in containers:
        if container["name"] == victim.container_name:
            container.update(state="exited", status="Exited (139) 1 second ago")
    fleet.set_containers(victim.node, containers)
    sent = fleet.step(3, deployment)
    victim.refresh_from_db()
    assert victim.state == ReplicaState.FAILED
    assert "exited" in victim.reason
    starts = [o for o in sent if o.task == START]
    assert len(starts) == 1
    replacement = Replica.objects.get(pk=starts[0].replica_id)
    assert replacement.slot == victim.slot
    # the failed replica's container is removed by the node sweep
    assert (victim.node_id, victim.container_name) in fleet.sweep()
    fleet.settle(deployment)
    assert len(live(deployment)) == 2
    assert_one_live_per_slot(deployment)


def test_vanished_container_is_replaced(fleet, two_nodes, variant, admin_user):
    deployment = _stable(fleet, admin_user, variant, replicas=1)
    (victim,) = live(deployment)
    fleet.set_containers(victim.node, [])
    fleet.step(3, deployment)
    victim.refresh_from_db()
    assert victim.state == ReplicaState.FAILED
    (replacement,) = live(deployment)
    assert replacement.slot == 0 and replacement.pk != victim.pk


def test_orphan_removed_after_grace(fleet, variant, settings):
    settings.FLEET_ORPHAN_GRACE_SECONDS = 60
    node = fleet.node("node-a")
    fleet.run_container(
        node, "fleet-ghost-r1-s0-999999", {"fleet.replica": "999999", "fleet.deployment": "ghost"}
    )
    fleet.set_containers(node, [*fleet.containers(node), {"name": "unmanaged", "labels": {}}])
    assert fleet.sweep() == []
    fleet.now += timedelta(seconds=61)
    sent = fleet.sweep()
    assert sent == [(node.pk, "fleet-ghost-r1-s0-999999")]
    (order,) = fleet.orders.drain([node.pk])
    assert order.task == STOP and order.args == [0, "fleet-ghost-r1-s0-999999"]  # 0: orphan


def _lose_the_replicas_node(fleet, two_nodes, variant, admin_user, settings):
    """One stable replica; its node stops heartbeating (grace 20 s, reschedule after 60 s)."""
    settings.FLEET_NODE_GRACE_SECONDS = 20
    settings.FLEET_RESCHEDULE_GRACE_SECONDS = 60
    a, b = two_nodes
    deployment = _stable(fleet, admin_user, variant, replicas=1)
    (victim,) = live(deployment)
    lost = a if victim.node_id == a.pk else b
    fleet.down.add(lost.pk)
    return deployment, victim, lost


def test_unreachable_node_rescheduled_and_stale_container_removed(
    fleet, two_nodes, variant, admin_user, settings
):
    deployment, victim, lost = _lose_the_replicas_node(
        fleet, two_nodes, variant, admin_user, settings
    )
    fleet.step(25, deployment)  # unreachable, within the reschedule grace: wait
    assert [r.pk for r in live(deployment)] == [victim.pk]
    fleet.step(30, deployment)
    assert [r.pk for r in live(deployment)] == [victim.pk]
    sent = fleet.step(40, deployment)  # 75 s unreachable: rescheduled
    victim.refresh_from_db()
    assert victim.state == ReplicaState.GONE
    (replacement,) = live(deployment)
    assert replacement.node_id != lost.pk and replacement.slot == victim.slot
    assert [o.replica_id for o in sent if o.task == START] == [replacement.pk]
    fleet.act(sent)
    # the node returns, still running the old container: removed, never two per slot
    fleet.down.discard(lost.pk)
    fleet.step(1, deployment)
    assert (lost.pk, victim.container_name) in fleet.sweep()
    (order,) = [o for o in fleet.orders.drain([lost.pk]) if o.task == STOP]
    assert order.container_name == victim.container_name
    assert [r.pk for r in live(deployment)] == [replacement.pk]


def test_no_surge_while_a_returned_node_still_runs_a_stale_container(
    fleet, two_nodes, variant, admin_user, settings
):
    """Never more than replicas + max_surge containers: one a node left running through its
    outage counts against the surge until the node sweep has removed it."""
    deployment, _, lost = _lose_the_replicas_node(fleet, two_nodes, variant, admin_user, settings)
    fleet.step(25, deployment)
    fleet.act(fleet.step(55, deployment))  # rescheduled; the replacement runs elsewhere
    fleet.settle(deployment)
    fleet.down.discard(lost.pk)  # back, still listing the old container as running
    fleet.step(0)
    update(admin_user, deployment, env={"ROLLOUT": "2"})
    sent = fleet.step(1, deployment)
    assert START not in by_task(sent), "a surge replica started beside the stale container"
    assert len(live(deployment)) == 1
    fleet.sweep()
    fleet.act([o for o in fleet.orders.drain([lost.pk]) if o.task == STOP])
    sent = fleet.step(1, deployment)  # removed (and heartbeated): the rollout goes on
    assert by_task(sent)[START] == 1
    assert_one_live_per_slot(deployment)


def test_a_replica_started_but_never_reported_keeps_its_port_on_a_shared_host(
    fleet, two_nodes, variant, admin_user, settings
):
    """Two agents on one host: a node lost between starting a container and reporting it
    (its inventory never listed it) keeps that port taken; the replacement takes another."""
    settings.FLEET_NODE_GRACE_SECONDS = 20
    settings.FLEET_RESCHEDULE_GRACE_SECONDS = 60
    a, b = two_nodes
    for node in (a, b):
        node.inventory["host"]["hostname"] = "shared.example.net"
        node.save(update_fields=["inventory"])
    deployment = deploy(admin_user, variant)
    fleet.step(0, deployment)  # placed and started: the agent never reports the container
    (victim,) = live(deployment)
    assert victim.state == ReplicaState.STARTING and victim.host_port
    lost = a if victim.node_id == a.pk else b
    fleet.down.add(lost.pk)
    fleet.step(25, deployment)
    fleet.step(55, deployment)  # rescheduled
    victim.refresh_from_db()
    assert victim.state == ReplicaState.GONE
    (replacement,) = live(deployment)
    assert replacement.node_id != lost.pk
    assert replacement.host_port != victim.host_port, (
        f"the replacement was given port {victim.host_port}, which the lost node's container "
        "may still hold on this host"
    )


def test_draining_node_moves_replicas_start_first(fleet, two_nodes, variant, admin_user):
    a, b = two_nodes
    deployment = _stable(fleet, admin_user, variant, replicas=2)
    on_a = [r for r in live(deployment) if r.node_id == a.pk]
    assert on_a
    a.__class__.objects.filter(pk=a.pk).update(draining=True, cordoned=True)
    sent = fleet.step(0, deployment)
    assert STOP not in by_task(sent)  # start-first
    fleet.act(sent)
    fleet.settle(deployment)
    rows = live(deployment)
    assert len(rows) == 2
    assert all(r.node_id == b.pk for r in rows)
    for replica in on_a:
        replica.refresh_from_db()
        assert replica.state == ReplicaState.GONE
        assert "draining" in replica.reason
    assert_one_live_per_slot(deployment)


def test_reports_from_a_node_that_does_not_own_the_replica_are_ignored(
    fleet, two_nodes, variant, admin_user
):
    a, b = two_nodes
    deployment = deploy(admin_user, variant)
    fleet.step(0, deployment)
    (replica,) = live(deployment)
    other = b if replica.node_id == a.pk else a
    assert apply_replica_report(other, replica.pk, {"state": "healthy"}) is None
    replica.refresh_from_db()
    assert replica.state == ReplicaState.STARTING


def test_unreachable_node_replicas_wait_within_grace(fleet, two_nodes, admin_user, variant):
    deployment = _stable(fleet, admin_user, variant, replicas=1)
    (replica,) = live(deployment)
    assert Deployment.objects.get(pk=deployment.pk).state == DeploymentState.ACTIVE
    fleet.down.add(replica.node_id)
    fleet.step(21, deployment)
    replica.refresh_from_db()
    assert replica.state == ReplicaState.AVAILABLE
    assert replica.node.get_status(fleet.now) == NodeState.UNREACHABLE
