"""Agents' reports on their replicas (healthy, failed, stopped), applied to the Replica rows.

Stale or duplicate reports change nothing; a report that changes something nudges the
deployment's reconcile pass (first, on commit: the pass acts on it) and tells browsers.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from deployments import traffic
from deployments.choices import ReplicaState
from deployments.live_updates import push, replica_payload
from deployments.models import Replica
from deployments.reconcile_hooks import nudge
from deployments.rollouts import RUNNING
from fleet.models import Node


def apply_replica_report(node: Node, replica_id: int, data: dict[str, Any]) -> Replica | None:
    """An agent's report on one of its replicas; stale or duplicate reports change nothing."""
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
            traffic.routing_changed(f"replica {replica.pk} healthy")
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
