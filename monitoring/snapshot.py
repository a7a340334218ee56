"""What the fleet looks like right now, read from PostgreSQL (and queue depths from Redis).

One :class:`FleetSnapshot` feeds both the Prometheus exposition
(:mod:`monitoring.prometheus.collectors`) and the console's active alerts
(:mod:`monitoring.alerts`), so a rule in ``docker/prometheus/rules`` and the console judge
the same numbers. A snapshot costs a fixed number of queries however
many nodes, replicas or jobs there are (guarded by a test).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, F, OuterRef, Subquery
from django.utils import timezone

from core.jobs import Job
from core.redis_client import redis_client
from deployments.choices import ReplicaState
from deployments.models import Deployment, Replica, Rollout
from fleet.choices import NodeState
from fleet.models import Node

log = logging.getLogger(__name__)

# Slot replacements are counted over this window (crash-looping: see monitoring/alerts.py).
REPLACEMENT_WINDOW = timedelta(minutes=15)
CONTROL_QUEUE = "control"
# kombu's Redis transport keeps messages of priority p > 0 in "<queue>\x06\x16<p>".
_PRIORITY_SEP = "\x06\x16"
_PRIORITIES = (3, 6, 9)


@dataclass(frozen=True)
class NodeRow:
    id: int
    name: str
    state: str
    state_changed_at: datetime
    maintenance: bool
    cordoned: bool
    last_heartbeat_at: datetime | None
    disk_total_bytes: int | None
    disk_free_bytes: int | None
    gpus: list[dict[str, Any]]


@dataclass(frozen=True)
class ReplicaRow:
    id: int
    deployment: str
    deployment_id: int
    slot: int
    revision: int
    node: str
    state: str
    restarts: int


@dataclass(frozen=True)
class RolloutRow:
    id: int
    deployment: str
    deployment_id: int
    state: str
    to_revision: int
    is_rollback: bool
    failure_reason: str
    finished_at: datetime | None


@dataclass(frozen=True)
class SlotChurn:
    deployment: str
    deployment_id: int
    slot: int
    revision: int
    replacements: int  # replicas created for this slot and revision in the window, minus one


@dataclass
class FleetSnapshot:
    taken_at: datetime
    nodes: list[NodeRow]
    replicas: list[ReplicaRow]  # not gone: pending … stopping, failed
    replica_states: dict[tuple[str, str], int]  # (deployment, state) -> count, gone excluded
    deployments: list[dict[str, Any]]  # name, state, desired, available
    jobs: dict[tuple[str, str], int]  # (kind, state) -> count
    rollout_outcomes: dict[str, int]  # state -> count, all rollouts ever kept
    latest_rollouts: list[RolloutRow]  # each deployment's newest rollout
    churn: list[SlotChurn]
    queue_depths: dict[str, int] = field(default_factory=dict)  # queue -> messages waiting
    queue_error: str = ""  # why queue depths could not be read (empty: they were)

    def node_queue(self, node: NodeRow) -> str:
        return f"node.{node.id}"


def take(now: datetime | None = None, *, queues: bool = True) -> FleetSnapshot:
    """Read the fleet's state: nodes, replicas, deployments, jobs, rollouts (and queues)."""
    now = now or timezone.now()
    nodes = [
        NodeRow(
            id=row["id"],
            name=row["name"],
            state=row["state"],
            state_changed_at=row["state_changed_at"],
            maintenance=row["maintenance"],
            cordoned=row["cordoned"],
            last_heartbeat_at=row["last_heartbeat_at"],
            disk_total_bytes=_int((row["disk"] or {}).get("total_bytes")),
            disk_free_bytes=_int((row["disk"] or {}).get("free_bytes")),
            gpus=[g for g in (row["gpus"] or []) if isinstance(g, dict)],
        )
        for row in Node.objects.order_by("name").values(
            "id",
            "name",
            "state",
            "state_changed_at",
            "maintenance",
            "cordoned",
            "last_heartbeat_at",
            disk=F("inventory__disk"),
            gpus=F("inventory__gpus"),
        )
    ]
    replicas = [
        ReplicaRow(
            id=row["id"],
            deployment=row["deployment__name"],
            deployment_id=row["deployment_id"],
            slot=row["slot"],
            revision=row["revision__number"],
            node=row["node__name"] or "",
            state=row["state"],
            restarts=row["restarts"],
        )
        for row in Replica.objects.exclude(state=ReplicaState.GONE)
        .order_by("deployment__name", "slot", "id")
        .values(
            "id",
            "deployment__name",
            "deployment_id",
            "slot",
            "revision__number",
            "node__name",
            "state",
            "restarts",
        )
    ]
    replica_states: dict[tuple[str, str], int] = {}
    for replica in replicas:
        key = (replica.deployment, replica.state)
        replica_states[key] = replica_states.get(key, 0) + 1
    available: dict[int, int] = {}
    for replica in replicas:
        if replica.state == ReplicaState.AVAILABLE:
            available[replica.deployment_id] = available.get(replica.deployment_id, 0) + 1
    deployments = [
        {
            "name": row["name"],
            "state": row["state"],
            "desired": row["desired_replicas"],
            "available": available.get(row["id"], 0),
        }
        for row in Deployment.objects.order_by("name").values(
            "id", "name", "state", "desired_replicas"
        )
    ]
    jobs = {
        (row["kind"], row["state"]): row["n"]
        for row in Job.objects.order_by().values("kind", "state").annotate(n=Count("id"))
    }
    outcomes = {
        row["state"]: row["n"]
        for row in Rollout.objects.order_by().values("state").annotate(n=Count("id"))
    }
    newest = Rollout.objects.filter(deployment=OuterRef("pk")).order_by("-started_at", "-id")
    latest_ids = [
        pk
        for pk in Deployment.objects.annotate(latest=Subquery(newest.values("pk")[:1])).values_list(
            "latest", flat=True
        )
        if pk is not None
    ]
    latest = [
        RolloutRow(
            id=row["id"],
            deployment=row["deployment__name"],
            deployment_id=row["deployment_id"],
            state=row["state"],
            to_revision=row["to_revision__number"],
            is_rollback=row["is_rollback"],
            failure_reason=row["failure_reason"],
            finished_at=row["finished_at"],
        )
        for row in Rollout.objects.filter(pk__in=latest_ids)
        .order_by("deployment__name")
        .values(
            "id",
            "deployment__name",
            "deployment_id",
            "state",
            "to_revision__number",
            "is_rollback",
            "failure_reason",
            "finished_at",
        )
    ]
    churn = [
        SlotChurn(
            deployment=row["deployment__name"],
            deployment_id=row["deployment_id"],
            slot=row["slot"],
            revision=row["revision__number"],
            replacements=row["n"] - 1,
        )
        for row in Replica.objects.filter(created_at__gte=now - REPLACEMENT_WINDOW)
        .order_by()
        .values("deployment__name", "deployment_id", "slot", "revision__number")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .order_by("deployment__name", "slot", "revision__number")
    ]
    snapshot = FleetSnapshot(
        taken_at=now,
        nodes=nodes,
        replicas=replicas,
        replica_states=replica_states,
        deployments=deployments,
        jobs=jobs,
        rollout_outcomes=outcomes,
        latest_rollouts=latest,
        churn=churn,
    )
    if queues:
        read_queue_depths(snapshot)
    return snapshot


def read_queue_depths(snapshot: FleetSnapshot) -> None:
    """Messages waiting on the control queue and on every node's queue, from the broker.

    Only a Redis broker can be read: with the embedded mode's file-system broker no depth
    is reported (and that is not an error).
    """
    if not broker_readable():
        return
    names = [CONTROL_QUEUE, *(snapshot.node_queue(node) for node in snapshot.nodes)]
    try:
        lengths = redis_client().register_script(_QUEUE_LENGTHS)(keys=names)
    except Exception as exc:  # the broker is down: say so on the scrape, do not fail it
        log.warning("reading queue depths from Redis failed: %s", exc)
        snapshot.queue_error = f"the broker could not be read: {exc}"
        return
    for name, length in zip(names, lengths, strict=True):
        snapshot.queue_depths[name] = int(length)


# One round trip for every queue: LLEN of the queue and of its priority lists, summed.
_QUEUE_LENGTHS = (
    "local out = {}\n"
    "for i, name in ipairs(KEYS) do\n"
    "  local n = redis.call('LLEN', name)\n"
    + "".join(f"  n = n + redis.call('LLEN', name .. '\\006\\022{p}')\n" for p in _PRIORITIES)
    + "  out[i] = n\n"
    "end\n"
    "return out\n"
)


def broker_readable() -> bool:
    """Whether queue depths come from a Redis broker (not the embedded file-system one)."""
    return bool(getattr(settings, "REDIS_URL", ""))


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def heartbeat_age(node: NodeRow, now: datetime) -> float | None:
    if node.last_heartbeat_at is None:
        return None
    return max(0.0, (now - node.last_heartbeat_at).total_seconds())


def reports_inventory(node: NodeRow) -> bool:
    """Disk and GPU figures are current only while the node heartbeats."""
    return node.state == NodeState.READY


__all__ = [
    "FleetSnapshot",
    "NodeRow",
    "ReplicaRow",
    "RolloutRow",
    "SlotChurn",
    "heartbeat_age",
    "reports_inventory",
    "take",
]
