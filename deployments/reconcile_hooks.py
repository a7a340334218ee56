"""Nudging the deployment reconciler after a change (services call this on commit).

A nudge is only a hint: the reconciler also runs periodically (level-triggered), so a lost
message, or a broker that is down for a moment, delays the work but loses nothing. Nudges
are coalesced: while one for a deployment waits in the queue, more are not sent (the task
clears the mark when it starts, so a change during a pass nudges again).
"""

from __future__ import annotations

import logging
import time

from django.core.cache import cache

logger = logging.getLogger(__name__)

RECONCILE_TASK = "deployments.tasks.reconcile_deployment"
CONTROL_QUEUE = "control"
PENDING_TTL_S = 5  # a lost nudge stops suppressing others after this long


def _key(deployment_id: int) -> str:
    return f"reconcile-nudge:{deployment_id}"


def nudge(deployment_id: int) -> None:
    """Ask a worker to reconcile one deployment soon (by task name, JSON, id only)."""
    from config.celery import app

    if not cache.add(_key(deployment_id), 1, timeout=PENDING_TTL_S):
        return
    try:
        app.send_task(
            RECONCILE_TASK,
            args=[deployment_id],
            kwargs={"sent_at": round(time.time(), 4)},
            queue=CONTROL_QUEUE,
            expires=PENDING_TTL_S * 6,
        )
    except Exception:  # the periodic reconcile picks the change up anyway
        cache.delete(_key(deployment_id))
        logger.warning("could not nudge the reconciler for deployment %s", deployment_id)


def clear(deployment_id: int) -> None:
    cache.delete(_key(deployment_id))
