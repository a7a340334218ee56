"""The deployment reconciler: level-triggered, idempotent, one pass per deployment at a time.

Desired state: the deployment's state, current revision and ``desired_replicas``. Observed
state: Replica rows (written by agents' status reports) and the managed containers each node
lists in its heartbeat inventory. A pass compares them and acts; every side effect (a start
or stop order on a node's queue, a download job) is sent on commit and may be lost or
duplicated without harm: orders are idempotent on the agent, and an order with no answer is
sent again after ``FLEET_REPLICA_RESEND_SECONDS`` (it expires then, so at most one is live).

A pass runs under a per-deployment PostgreSQL advisory lock; a pass that cannot take it
returns at once (the holder's pass, or the next periodic one, does the work). Rollout rules
(batches, gates, revert, pause) are in :mod:`deployments.rollout_states` and
:mod:`deployments.rollouts`; node-level work (orphans, stale containers) in
:mod:`deployments.node_sweep`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from core import live
from core.history import ChangeContext
from core.jobs import Job, JobState
from deployments import replica_specs
from deployments.choices import DeploymentState, ReplicaState
from deployments.models import Deployment, Replica
from deployments.rollouts import LIVE, RUNNING
from fleet.choices import NodeState
from fleet.models import Node

log = logging.getLogger(__name__)

LOCK_CLASS = 0x5EED  # advisory-lock namespace of deployment reconciles (objid = deployment id)
NODE_SWEEP_LOCK = 0  # objid of the node-level sweep
OBSERVATION_MARGIN_S = 2.0  # an inventory must be this much newer than a start to judge it
REPORTED_STATES = ("starting", "healthy", "failed", "stopped")
SYSTEM = ChangeContext.system("reconciler")
# The clock of a pass given no ``now`` (the one a change's own transaction runs, too); tests
# that drive the fleet on a simulated clock set it to theirs.
clock: Callable[[], datetime] = timezone.now


# --- Locking -------------------------------------------------------------------------------
def try_lock(objid: int) -> bool:
    """Take the transaction-level advisory lock, or say someone else holds it."""
    if connection.vendor != "postgresql":
        return True  # SQLite (embedded mode): one process, writes are serialised anyway
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [LOCK_CLASS, objid])
        return bool(cursor.fetchone()[0])


# --- Entry points --------------------------------------------------------------------------
def reconcile_deployment(
    deployment_id: int, *, now: datetime | None = None, created: bool = False
) -> bool:
    """One pass for one deployment; False when another pass holds its lock.

    ``created``: the deployment was inserted in the caller's transaction, so nothing can
    refer to it yet (no replica, no rollout) and the pass does not look for them.
    """
    from deployments.rollout_states import reconcile_desired

    with transaction.atomic():
        if not try_lock(deployment_id):
            return False
        deployment = (
            Deployment.objects.select_related("current_revision__variant__model", "stable_revision")
            .filter(pk=deployment_id)
            .first()
        )
        if deployment is None:
            return True
        p = Pass(deployment, now or clock(), created=created)
        messages: list[tuple[str, str, dict[str, Any]]] = []
        _collecting.pending = messages
        try:
            p.observe()
            reconcile_desired(p)
            p.finish()
        finally:
            _collecting.pending = None
        if messages:  # registered last: runs after the orders the pass registered
            transaction.on_commit(lambda: _send_live(messages))
    return True


def reconcile_all(*, now: datetime | None = None) -> int:
    """Beat's periodic pass: nodes (orphans, stale containers), then every deployment."""
    from deployments.node_sweep import sweep_nodes

    sweep_nodes(now=now)
    ids = list(
        Deployment.objects.exclude(
            state=DeploymentState.STOPPED, replicas__state__in=[*LIVE, ReplicaState.STOPPING]
        )
        .values_list("pk", flat=True)
        .distinct()
    )
    wanted = set(ids) | set(
        Replica.objects.filter(state__in=[*LIVE, ReplicaState.STOPPING])
        .values_list("deployment_id", flat=True)
        .distinct()
    )
    for deployment_id in sorted(wanted):
        try:
            reconcile_deployment(deployment_id, now=now)
        except Exception:  # one broken deployment must not stop the others
            log.exception("reconciling deployment %s failed", deployment_id)
    return len(wanted)


# --- Commands to agents --------------------------------------------------------------------
def _send(node_id: int, task: str, args: list[Any], ttl: float) -> None:
    from config.celery import app

    app.send_task(
        task,
        args=args,
        queue=f"node.{node_id}",
        expires=timezone.now() + timedelta(seconds=ttl),
    )


def _claim_send(key: str, ttl: float, *, now: datetime | None = None, force: bool = False) -> bool:
    """True when an order may go now: none sent for this key within ``ttl`` (re-send).

    The mark holds the pass's clock, so the re-send period is judged at the pass's ``now``
    (and also expires in real time with the cache entry).
    """
    stamp = (now or timezone.now()).timestamp()
    if force or cache.add(key, stamp, timeout=ttl):
        if force:
            cache.set(key, stamp, timeout=ttl)
        return True
    last = cache.get(key)
    if last is None or stamp - float(last) >= ttl:
        cache.set(key, stamp, timeout=ttl)
        return True
    return False


def send_start(replica: Replica, *, now: datetime | None = None, force: bool = False) -> None:
    """Order the node to start (or keep) the replica's container; coalesced, re-sent."""
    ttl = float(settings.FLEET_REPLICA_RESEND_SECONDS)
    if replica.node_id is None or not _claim_send(
        f"replica-start:{replica.pk}", ttl, now=now, force=force
    ):
        return
    spec, model = replica_specs.container_spec(replica)
    options = {
        "port": replica.host_port,
        "wait_s": min(float(settings.FLEET_REPLICA_START_WAIT_SECONDS), ttl - 1),
    }
    replica_id, node_id = replica.pk, replica.node_id

    def order() -> None:
        options["sent_at"] = round(time.time(), 4)  # the agent logs how long the order took
        _send(node_id, "fleet.agent.replica_start", [replica_id, spec, model, options], ttl)

    transaction.on_commit(order, robust=True)  # unsent: the pass re-sends it after the ttl


def send_stop(
    replica_id: int,
    node_id: int,
    container_name: str,
    *,
    now: datetime | None = None,
    force: bool = False,
) -> None:
    ttl = float(settings.FLEET_REPLICA_RESEND_SECONDS)
    if not container_name or not _claim_send(
        f"replica-stop:{node_id}:{container_name}", ttl, now=now, force=force
    ):
        return
    transaction.on_commit(
        lambda: _send(node_id, "fleet.agent.replica_stop", [replica_id, container_name], ttl),
        robust=True,  # unsent: the pass re-sends it after the ttl
    )


def forget_sends(replica_id: int) -> None:
    cache.delete(f"replica-start:{replica_id}")


# --- Live updates --------------------------------------------------------------------------
_collecting = threading.local()  # a pass's live messages, sent after its agent orders


def push(deployment_id: int, kind: str, payload: dict[str, Any]) -> None:
    """On commit: tell browsers watching the deployment (``deployment.<id>``).

    Inside a pass the messages are collected and sent on commit after the pass's orders to
    agents (those are on the critical path of a start; browsers can wait a few ms).
    """
    group = f"deployment.{deployment_id}"
    pending: list[tuple[str, str, dict[str, Any]]] | None = getattr(_collecting, "pending", None)
    if pending is not None:
        pending.append((group, f"deployment.{kind}", payload))
        return
    transaction.on_commit(lambda: _send_live([(group, f"deployment.{kind}", payload)]))


def _send_live(messages: list[tuple[str, str, dict[str, Any]]]) -> None:
    changed: dict[str, None] = {}
    for group, message_type, payload in messages:
        live.send(group, message_type, payload)
        changed[group] = None
    for group in changed:  # the list page: one notice per deployment and pass
        live.send(live.DEPLOYMENTS_GROUP, "deployments.changed", {"id": int(group.split(".")[1])})


def replica_payload(replica: Replica) -> dict[str, Any]:
    return {
        "id": replica.pk,
        "deployment": replica.deployment_id,
        "revision": replica.revision.number if replica.revision_id else None,
        "slot": replica.slot,
        "node": replica.node_id,
        "state": replica.state,
        "reason": replica.reason,
        "host_port": replica.host_port,
        "restarts": replica.restarts,
    }


def rollout_payload(rollout: Any) -> dict[str, Any]:
    return {
        "id": rollout.pk,
        "deployment": rollout.deployment_id,
        "from_revision": rollout.from_revision.number if rollout.from_revision_id else None,
        "to_revision": rollout.to_revision.number,
        "state": rollout.state,
        "is_rollback": rollout.is_rollback,
        "failure_reason": rollout.failure_reason,
        "steps": rollout.steps[-5:],
    }


def deployment_payload(deployment: Deployment) -> dict[str, Any]:
    return {
        "id": deployment.pk,
        "state": deployment.state,
        "paused_reason": deployment.paused_reason,
        "current_revision": (
            deployment.current_revision.number if deployment.current_revision else None
        ),
        "stable_revision": deployment.stable_revision.number
        if deployment.stable_revision
        else None,
        "version": deployment.version,
    }


# --- One pass ------------------------------------------------------------------------------
class Pass:
    """The observed state of one deployment and the changes a pass makes to it."""

    def __init__(self, deployment: Deployment, now: datetime, *, created: bool = False) -> None:
        self.deployment = deployment
        self.now = now
        self.created = created  # inserted in this transaction: no rows refer to it yet
        self.replicas: list[Replica] = []
        self.nodes: dict[int, Node] = {}
        self.containers: dict[int, dict[str, dict[str, Any]]] = {}  # node -> replica id -> c
        self.changed: dict[int, Replica] = {}
        self.changed_rollouts: dict[int, Any] = {}  # id(rollout) -> rollout (new ones unsaved)
        self.deployment_changed = False
        self.delete_deployment = False

    # observation ----------------------------------------------------------------------
    def observe(self) -> None:
        if self.created:
            return
        self.replicas = list(
            Replica.objects.select_for_update(of=("self",))
            .select_related("revision")
            .filter(deployment=self.deployment, state__in=[*LIVE, ReplicaState.STOPPING])
            .order_by("slot", "pk")
        )
        node_ids = {r.node_id for r in self.replicas if r.node_id is not None}
        self.nodes = {n.pk: n for n in Node.objects.filter(pk__in=node_ids)}
        for node in self.nodes.values():
            by_replica: dict[str, dict[str, Any]] = {}
            for container in (node.inventory or {}).get("containers") or []:
                rid = (container.get("labels") or {}).get("fleet.replica")
                if rid:
                    by_replica[str(rid)] = container
            self.containers[node.pk] = by_replica
        for replica in list(self.replicas):
            self._observe_replica(replica)

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.state in LIVE]

    def node_gone_for(self, node: Node | None) -> float | None:
        """Seconds the node has been unreachable (None when it is reachable)."""
        if node is None:
            return float("inf")
        if node.get_status(self.now) != NodeState.UNREACHABLE:
            return None
        grace = settings.FLEET_NODE_GRACE_SECONDS
        since = (
            node.last_heartbeat_at + timedelta(seconds=grace) if node.last_heartbeat_at else None
        )
        if node.state == NodeState.UNREACHABLE and node.state_changed_at:
            since = min(since, node.state_changed_at) if since else node.state_changed_at
        if since is None:
            return float("inf")
        return max(0.0, (self.now - since).total_seconds())

    def _observe_replica(self, replica: Replica) -> None:
        node = self.nodes.get(replica.node_id) if replica.node_id else None
        if replica.node_id is not None:
            gone = self.node_gone_for(node)
            if gone is not None and gone >= settings.FLEET_RESCHEDULE_GRACE_SECONDS:
                name = node.name if node else "its node"
                self.set_state(
                    replica,
                    ReplicaState.GONE,
                    f"{name} unreachable for {int(gone)} s: rescheduled (its container is "
                    "removed when the node returns)",
                )
                return
            if gone is not None:
                return  # wait: the node may come back within the grace period
        policy = self.policy()
        if replica.state == ReplicaState.DOWNLOADING:
            self._observe_download(replica)
        elif replica.state == ReplicaState.STARTING:
            waited = (self.now - (replica.started_at or replica.created_at)).total_seconds()
            if waited > policy.healthy_deadline:
                self.set_state(
                    replica,
                    ReplicaState.FAILED,
                    f"not healthy within its deadline of {policy.healthy_deadline:g} s",
                )
            else:
                send_start(replica, now=self.now)
        elif replica.state in (ReplicaState.HEALTHY, ReplicaState.AVAILABLE):
            problem = self._container_problem(replica, node)
            if problem:
                self.set_state(replica, ReplicaState.FAILED, problem)
            elif replica.state == ReplicaState.HEALTHY and replica.healthy_since:
                healthy_for = (self.now - replica.healthy_since).total_seconds()
                if healthy_for >= policy.min_healthy_seconds:
                    replica.available_at = self.now
                    self.set_state(replica, ReplicaState.AVAILABLE, "")
        elif replica.state == ReplicaState.STOPPING:
            if replica.node_id is None or not replica.container_name:
                self.set_state(replica, ReplicaState.GONE, replica.reason)
            else:
                send_stop(replica.pk, replica.node_id, replica.container_name, now=self.now)

    def _observe_download(self, replica: Replica) -> None:
        job = (
            Job.objects.filter(pk=replica.download_job_id).first()
            if replica.download_job_id
            else None
        )
        if job is None or job.state == JobState.SUCCEEDED:
            self.start(replica)
        elif job.state in (JobState.FAILED, JobState.CANCELLED):
            self.set_state(
                replica,
                ReplicaState.FAILED,
                f"download job #{job.pk} {job.state}: {job.error}".strip(": "),
            )

    def _container_problem(self, replica: Replica, node: Node | None) -> str:
        """Why a replica that was healthy is not any more, judged from a fresh inventory."""
        if node is None or node.last_heartbeat_at is None:
            return ""
        since = replica.healthy_since or replica.started_at or replica.created_at
        if (node.last_heartbeat_at - since).total_seconds() < OBSERVATION_MARGIN_S:
            return ""  # the inventory predates this container
        container = self.containers.get(node.pk, {}).get(str(replica.pk))
        if container is None:
            return "its container is gone from the node"
        state = str(container.get("state") or "")
        if state not in ("running", "restarting", "created"):
            return f"its container {state} ({container.get('status') or 'no status'})"
        if state == "restarting":
            return "its container is restarting (it crashed)"
        return ""

    # changes --------------------------------------------------------------------------
    def policy(self) -> Any:
        from deployments.rollouts import policy

        revision = self.deployment.current_revision
        return policy(dict(revision.spec) if revision else {})

    def set_state(self, replica: Replica, state: str, reason: str) -> None:
        if replica.state == state and replica.reason == reason:
            return
        if state != ReplicaState.STARTING:
            forget_sends(replica.pk)
        replica.state = state
        replica.reason = reason[:4000]
        if state in (ReplicaState.GONE, ReplicaState.FAILED) and replica.stopped_at is None:
            replica.stopped_at = self.now if state == ReplicaState.GONE else None
        self.changed[replica.pk] = replica

    def start(self, replica: Replica) -> None:
        """The variant is on the node: order the container started."""
        replica.started_at = self.now
        self.set_state(replica, ReplicaState.STARTING, "")
        send_start(replica, now=self.now, force=True)

    def stop(self, replica: Replica, reason: str) -> None:
        if replica.state in (ReplicaState.PENDING, ReplicaState.DOWNLOADING):
            self.set_state(replica, ReplicaState.GONE, reason)
            return
        self.set_state(replica, ReplicaState.STOPPING, reason)
        if replica.node_id is not None and replica.container_name:
            send_stop(replica.pk, replica.node_id, replica.container_name, now=self.now, force=True)
        else:
            self.set_state(replica, ReplicaState.GONE, reason)

    def add(self, replica: Replica) -> None:
        self.replicas.append(replica)
        self.changed[replica.pk] = replica

    def finish(self) -> None:
        from deployments.rollout_states import save_deployment

        deployment_id = self.deployment.pk
        for replica in self.changed.values():
            replica.save()
            push(deployment_id, "replica", replica_payload(replica))
        for rollout in self.changed_rollouts.values():
            rollout.save()
            push(deployment_id, "rollout", rollout_payload(rollout))
        if self.delete_deployment:
            from deployments.services import delete_now

            delete_now(
                ChangeContext.system("reconciler", reason="its replicas are gone"), self.deployment
            )
            push(deployment_id, "deleted", {"id": deployment_id})
        elif self.deployment_changed:
            save_deployment(self.deployment)
            push(deployment_id, "state", deployment_payload(self.deployment))


# --- Agent reports -------------------------------------------------------------------------
def apply_replica_report(node: Node, replica_id: int, data: dict[str, Any]) -> Replica | None:
    """An agent's report on one of its replicas; stale or duplicate reports change nothing."""
    from deployments.reconcile_hooks import nudge

    state = data["state"]
    now = timezone.now()
    with transaction.atomic():
        replica = (
            Replica.objects.select_for_update()
            .select_related("revision")
            .filter(pk=replica_id, node=node)
            .first()
        )
        if replica is None:
            return None
        before = (replica.state, replica.reason, replica.container_id, replica.restarts)
        if data.get("container_id"):
            replica.container_id = str(data["container_id"])[:64]
        replica.restarts = max(replica.restarts, int(data.get("restarts") or 0))
        replica.last_seen_at = now
        if state == "healthy" and replica.state == ReplicaState.STARTING:
            replica.state, replica.reason, replica.healthy_since = ReplicaState.HEALTHY, "", now
        elif state == "failed" and replica.state in RUNNING:
            replica.state = ReplicaState.FAILED
            replica.reason = str(data.get("error") or "the container failed")[:4000]
        elif state == "stopped":
            if replica.state == ReplicaState.STOPPING:
                replica.state = ReplicaState.GONE
            replica.stopped_at = replica.stopped_at or now
        replica.save()
        if (replica.state, replica.reason, replica.container_id, replica.restarts) != before:
            deployment_id = replica.deployment_id
            transaction.on_commit(lambda: nudge(deployment_id))  # first: the pass acts on it
            push(deployment_id, "replica", replica_payload(replica))
    return replica
