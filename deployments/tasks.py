"""Celery tasks of deployments: thin wrappers over the reconciler (ids as arguments)."""

from __future__ import annotations

import logging
import time

from celery import shared_task

from core.durations import timed  # also times every task (Celery signals)
from deployments import reconcile_hooks, reconciler

log = logging.getLogger(__name__)


@shared_task(name="deployments.tasks.reconcile_deployment", ignore_result=True)
@timed("deployment")
def reconcile_deployment(deployment_id: int, sent_at: float | None = None) -> None:
    if sent_at:  # how long the nudge waited (broker and worker queueing)
        waited_ms = (time.time() - sent_at) * 1000
        log.info("reconciling deployment %s, nudged %.1f ms ago", deployment_id, waited_ms)
    reconcile_hooks.clear(deployment_id)  # a change from now on nudges again
    reconciler.reconcile_deployment(deployment_id)


@shared_task(name="deployments.tasks.reconcile_all", ignore_result=True)
@timed("all")
def reconcile_all() -> None:
    reconciler.reconcile_all()


@shared_task(name="deployments.tasks.autoscale", ignore_result=True)
@timed("autoscale")
def autoscale() -> None:
    from deployments import autoscaler

    autoscaler.tick()
