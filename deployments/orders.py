"""Orders to agents: start or stop a replica's container, sent on commit on the node's queue.

Each order is coalesced per replica (start) or container (stop) and re-sent by a later pass
when no answer came within ``FLEET_REPLICA_RESEND_SECONDS``; it expires then, so at most one
is live. Orders are idempotent on the agent, so a lost or duplicated one does no harm.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from deployments import replica_specs
from deployments.models import Replica


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
