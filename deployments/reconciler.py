"""The deployment reconciler: level-triggered, idempotent, one pass per deployment at a time.

Desired state: the deployment's state, current revision and ``desired_replicas``. Observed
state: Replica rows (written by agents' status reports) and the managed containers each node
lists in its heartbeat inventory. A pass compares them and acts; every side effect (a start
or stop order on a node's queue, a download job) is sent on commit and may be lost or
duplicated without harm: orders are idempotent on the agent, and an order with no answer is
sent again after ``FLEET_REPLICA_RESEND_SECONDS`` (it expires then, so at most one is live).

A pass runs under a per-deployment PostgreSQL advisory lock; a pass that cannot take it
returns at once (the holder's pass, or the next periodic one, does the work). This module
holds the entry points; the parts of a pass are below it: the pass itself (observation,
changes, the lock) in :mod:`deployments.reconcile_pass`, orders to agents in
:mod:`deployments.orders`, live updates in :mod:`deployments.live_updates`, new replicas in
:mod:`deployments.new_replicas`. Rollout rules (batches, gates, revert, pause) are in
:mod:`deployments.rollout_states` and :mod:`deployments.rollouts`; node-level work (orphans,
stale containers) in :mod:`deployments.node_sweep`; agents' reports in
:mod:`deployments.replica_reports`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from deployments import live_updates
from deployments.choices import DeploymentState, ReplicaState
from deployments.models import Deployment, Replica
from deployments.node_sweep import sweep_nodes
from deployments.reconcile_pass import Pass, try_lock
from deployments.rollout_states import reconcile_desired
from deployments.rollouts import LIVE

log = logging.getLogger(__name__)

# The clock of a pass given no ``now`` (the one a change's own transaction runs, too); tests
# that drive the fleet on a simulated clock set it to theirs.
clock: Callable[[], datetime] = timezone.now


# --- Entry points --------------------------------------------------------------------------
def reconcile_deployment(
    deployment_id: int, *, now: datetime | None = None, created: bool = False
) -> bool:
    """One pass for one deployment; False when another pass holds its lock.

    ``created``: the deployment was inserted in the caller's transaction, so nothing can
    refer to it yet (no replica, no rollout) and the pass does not look for them.
    """
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
        with live_updates.collecting():  # sent on commit after the pass's orders
            p.observe()
            reconcile_desired(p)
            p.finish()
    return True


def reconcile_all(*, now: datetime | None = None) -> int:
    """Beat's periodic pass: nodes (orphans, stale containers), then every deployment."""
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
