"""One reconcile pass of one deployment: what it observes, and the changes it makes.

:class:`Pass` holds the deployment's replicas, their nodes and the containers those nodes
list, judges each replica (deadlines, fresh inventories, download jobs), and saves and pushes
what changed when the pass ends. The entry points that run a pass (under the lock taken by
:func:`try_lock`) are in :mod:`deployments.reconciler`; the rollout rules a pass applies in
:mod:`deployments.rollout_states`; orders to agents in :mod:`deployments.orders`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection

from core.history import ChangeContext
from core.jobs import Job, JobState
from deployments import rollouts, traffic
from deployments.choices import ReplicaState
from deployments.deletion import delete_now
from deployments.live_updates import deployment_payload, push, replica_payload, rollout_payload
from deployments.models import Deployment, Replica
from deployments.orders import forget_sends, send_start, send_stop
from deployments.rollouts import LIVE
from fleet.choices import NodeState
from fleet.models import Node

LOCK_CLASS = 0x5EED  # advisory-lock namespace of deployment reconciles (objid = deployment id)
NODE_SWEEP_LOCK = 0  # objid of the node-level sweep
OBSERVATION_MARGIN_S = 2.0  # an inventory must be this much newer than a start to judge it
SYSTEM = ChangeContext.system("reconciler")
# Replicas gateways send requests to (answering health, or proven available).
ROUTABLE = (ReplicaState.HEALTHY, ReplicaState.AVAILABLE)
# how a replica's reason ends when it was rescheduled away from a node that went unreachable
RESCHEDULED = "rescheduled (its container is removed when the node returns)"


# --- Locking -------------------------------------------------------------------------------
def try_lock(objid: int) -> bool:
    """Take the transaction-level advisory lock, or say someone else holds it."""
    if connection.vendor != "postgresql":
        return True  # SQLite (embedded mode): one process, writes are serialised anyway
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [LOCK_CLASS, objid])
        return bool(cursor.fetchone()[0])


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
        self.routing_changed = False  # a replica became routable or stopped being so

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

    def stale_containers(self) -> int:
        """Containers of this deployment that a reachable node still runs although their
        replica stopped being live after that node's last heartbeat was taken: a node back
        from an outage with what it ran meanwhile. The node sweep removes them at once; until
        it has, they count against ``max_surge`` (never more than replicas + max_surge run)."""
        listed: list[tuple[Node, int]] = []
        for node in Node.objects.filter(state=NodeState.READY).only(
            "pk", "state", "last_heartbeat_at", "inventory"
        ):
            if node.get_status(self.now) != NodeState.READY:
                continue
            for container in (node.inventory or {}).get("containers") or []:
                labels = container.get("labels") or {}
                rid = str(labels.get("fleet.replica") or "")
                if (
                    labels.get("fleet.deployment") == self.deployment.name
                    and container.get("state") == "running"
                    and rid.isdigit()
                ):
                    listed.append((node, int(rid)))
        if not listed:
            return 0
        live = {r.pk: r.node_id for r in self.live()}
        stopped = dict(
            Replica.objects.filter(pk__in=[rid for _, rid in listed]).values_list(
                "pk", "stopped_at"
            )
        )
        return sum(
            1
            for node, rid in listed
            if live.get(rid) != node.pk
            and (when := stopped.get(rid)) is not None
            and node.last_heartbeat_at is not None
            and when < node.last_heartbeat_at
        )

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
                    f"{name} unreachable for {int(gone)} s: {RESCHEDULED}",
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
                if replica.node_id is not None and replica.container_name:
                    # it may still run (a server that never answers): stopped now, not when
                    # a later heartbeat shows it to the node sweep
                    send_stop(
                        replica.pk,
                        replica.node_id,
                        replica.container_name,
                        now=self.now,
                        force=True,
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
            elif replica.drain_until is not None:
                self._drain(replica)
            else:
                send_stop(replica.pk, replica.node_id, replica.container_name, now=self.now)

    def _drain(self, replica: Replica) -> None:
        """A draining replica stops once no gateway may route to it or has requests on it,
        or at its drain deadline."""
        assert replica.drain_until is not None and replica.node_id is not None
        started = replica.drain_until - timedelta(seconds=settings.FLEET_DRAIN_SECONDS)
        if self.now < replica.drain_until and replica.pk in traffic.still_busy(
            {replica.pk: started.timestamp()}
        ):
            return
        replica.drain_until = None
        self.changed[replica.pk] = replica
        send_stop(replica.pk, replica.node_id, replica.container_name, now=self.now, force=True)

    def undrain(self, replicas: int, is_current: Any) -> None:
        """A scale-up while a scale-down drains: the draining replicas of the current
        revision in the slots wanted again serve again (their containers never stopped)."""
        taken = {r.slot for r in self.live()}
        for replica in self.replicas:
            if (
                replica.state == ReplicaState.STOPPING
                and replica.drain_until is not None
                and replica.slot < replicas
                and replica.slot not in taken
                and is_current(replica)
            ):
                replica.drain_until = None
                state = ReplicaState.AVAILABLE if replica.available_at else ReplicaState.HEALTHY
                self.set_state(replica, state, "")
                taken.add(replica.slot)

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
        revision = self.deployment.current_revision
        return rollouts.policy(dict(revision.spec) if revision else {})

    def set_state(self, replica: Replica, state: str, reason: str) -> None:
        if replica.state == state and replica.reason == reason:
            return
        if (replica.state in ROUTABLE) != (state in ROUTABLE):
            self.routing_changed = True
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

    def stop(self, replica: Replica, reason: str, *, drain: bool = False) -> None:
        """Stop a replica; with ``drain`` (a scale-down) a routable one first leaves the
        gateways' tables and finishes its requests (:meth:`_drain`)."""
        if replica.state in (ReplicaState.PENDING, ReplicaState.DOWNLOADING):
            self.set_state(replica, ReplicaState.GONE, reason)
            return
        if (
            drain
            and replica.state in ROUTABLE
            and replica.node_id is not None
            and replica.container_name
            and settings.FLEET_DRAIN_SECONDS > 0
        ):
            self.set_state(replica, ReplicaState.STOPPING, reason)
            replica.drain_until = self.now + timedelta(seconds=settings.FLEET_DRAIN_SECONDS)
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
        deployment_id = self.deployment.pk
        if self.routing_changed:
            traffic.routing_changed(f"replicas of deployment {deployment_id}")
        for replica in self.changed.values():
            replica.save()
            push(deployment_id, "replica", replica_payload(replica))
        for rollout in self.changed_rollouts.values():
            rollout.save()
            push(deployment_id, "rollout", rollout_payload(rollout))
        if self.delete_deployment:
            delete_now(
                ChangeContext.system("reconciler", reason="its replicas are gone"), self.deployment
            )
            push(deployment_id, "deleted", {"id": deployment_id})
        elif self.deployment_changed:
            save_deployment(self.deployment)
            push(deployment_id, "state", deployment_payload(self.deployment))


def save_deployment(deployment: Deployment) -> None:
    deployment.version += 1
    deployment.save(
        update_fields=["state", "paused_reason", "current_revision", "stable_revision", "version"]
    )
