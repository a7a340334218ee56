"""Node-level reconciliation: containers a node reports that no live replica owns.

- A container labelled with a replica that is no longer live on that node (failed, gone,
  rescheduled while its node was away, or placed elsewhere) is *stale*: removed at once. This
  is what happens when an unreachable node returns: never two live replicas for one slot.
- A managed container whose replica row does not exist at all is an *orphan*: removed once
  it is older than ``FLEET_ORPHAN_GRACE_SECONDS`` (judged by its creation time).

Only nodes that are reachable now are swept (their inventory is fresh).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from deployments.choices import ReplicaState
from deployments.models import Replica
from deployments.orders import send_stop
from deployments.reconcile_pass import NODE_SWEEP_LOCK, try_lock
from deployments.rollouts import RUNNING
from fleet.choices import NodeState
from fleet.models import Node


def sweep_nodes(*, now: datetime | None = None) -> list[tuple[int, str]]:
    """Send stops for stale and orphan containers; returns (node id, container name) sent."""
    now = now or timezone.now()
    sent: list[tuple[int, str]] = []
    with transaction.atomic():
        if not try_lock(NODE_SWEEP_LOCK):
            return sent
        nodes = [
            n
            for n in Node.objects.filter(state=NodeState.READY)
            if n.get_status(now) == NodeState.READY
        ]
        listed: list[tuple[Node, dict[str, Any], int | None]] = []
        for node in nodes:
            for container in (node.inventory or {}).get("containers") or []:
                labels = container.get("labels") or {}
                if labels.get("fleet.managed") != "true":
                    continue
                raw = str(labels.get("fleet.replica") or "")
                listed.append((node, container, int(raw) if raw.isdigit() else None))
        ids = {rid for _, _, rid in listed if rid is not None}
        rows = {
            pk: (node_id, state)
            for pk, node_id, state in Replica.objects.filter(pk__in=ids).values_list(
                "pk", "node_id", "state"
            )
        }
        keep = (*RUNNING, ReplicaState.STOPPING)
        for node, container, rid in listed:
            name = str(container.get("name") or "")
            row = rows.get(rid) if rid is not None else None
            if row is not None:
                node_id, state = row
                if node_id == node.pk and state in keep:
                    continue
                send_stop(rid or 0, node.pk, name, now=now)
                sent.append((node.pk, name))
                continue
            created = parse_datetime(str(container.get("created") or ""))
            age = (now - created).total_seconds() if created else float("inf")
            if age >= settings.FLEET_ORPHAN_GRACE_SECONDS:
                send_stop(0, node.pk, name, now=now)
                sent.append((node.pk, name))
    return sent
