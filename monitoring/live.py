"""Live metric points for browsers: one message per group per stored batch.

Groups (``core.live``): ``deployment.<id>`` gets every point of that deployment's replicas,
``node.<id>`` every point of the node and of the replicas on it, ``fleet`` the few series
the overview charts (:data:`FLEET_NAMES`). A message::

    {"type": "metrics.points",
     "payload": {"group": "deployment.7", "epoch": "3f…", "seq": 41, "sent_ms": 1764…,
                 "points": [[series, node, deployment, replica, name, device, t_ms, value], …]}}

``epoch`` names this server process and ``seq`` counts its messages to that group from 1
without gaps: a browser that sees a jump within one epoch missed a message (a dropped
socket, a slow consumer) and resyncs from the REST snapshot (``monitoring.api``), so no
point is lost on screen.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from core.live import FLEET_GROUP, LiveMessage
from monitoring.choices import NodeMetric, ReplicaMetric
from monitoring.ingest import LivePoint

log = logging.getLogger(__name__)

MESSAGE_TYPE = "metrics.points"
EPOCH = uuid.uuid4().hex[:12]
FLEET_NAMES = frozenset(
    {
        ReplicaMetric.GENERATED_TOKENS_PER_S,
        ReplicaMetric.REQUESTS_RUNNING,
        ReplicaMetric.REQUESTS_WAITING,
        NodeMetric.CPU_PERCENT,
        NodeMetric.GPU_UTILIZATION_PERCENT,
    }
)

_seq_lock = threading.Lock()
_seq: dict[str, int] = defaultdict(int)


def deployment_group(deployment_id: int) -> str:
    return f"deployment.{deployment_id}"


def node_group(node_id: int) -> str:
    return f"node.{node_id}"


def _row(point: LivePoint) -> list[Any]:
    return [
        point.series_id,
        point.node_id,
        point.deployment_id,
        point.replica_id,
        point.name,
        point.device,
        point.t_ms,
        point.value,
    ]


def messages(points: Iterable[LivePoint]) -> list[tuple[str, LiveMessage]]:
    """(group, message) for every group the points concern, numbered in send order."""
    by_group: dict[str, list[list[Any]]] = defaultdict(list)
    for point in points:
        row = _row(point)
        by_group[node_group(point.node_id)].append(row)
        if point.deployment_id is not None:
            by_group[deployment_group(point.deployment_id)].append(row)
        if point.name in FLEET_NAMES:
            by_group[FLEET_GROUP].append(row)
    sent_ms = int(time.time() * 1000)
    out: list[tuple[str, LiveMessage]] = []
    with _seq_lock:
        for group, rows in by_group.items():
            _seq[group] += 1
            payload = {
                "group": group,
                "epoch": EPOCH,
                "seq": _seq[group],
                "sent_ms": sent_ms,
                "points": rows,
            }
            out.append((group, {"type": MESSAGE_TYPE, "payload": payload}))
    return out


async def publish_async(points: list[LivePoint]) -> None:
    """Send the points from an event loop (the ASGI fast path); never raises."""
    layer = get_channel_layer()
    if layer is None or not points:
        return
    for group, message in messages(points):
        try:
            await layer.group_send(group, message)
        except Exception:  # stored already; a browser that misses it resyncs on the gap
            log.warning("live metrics to group %s failed", group, exc_info=True)


def publish(points: list[LivePoint]) -> None:
    """Send the points from synchronous code (the DRF view, on commit)."""
    if points:
        async_to_sync(publish_async)(points)
