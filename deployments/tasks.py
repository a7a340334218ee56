"""Celery tasks of deployments: thin wrappers over the reconciler (ids as arguments)."""

from __future__ import annotations

from celery import shared_task

from deployments import reconcile_hooks, reconciler


@shared_task(name="deployments.tasks.reconcile_deployment", ignore_result=True)
def reconcile_deployment(deployment_id: int) -> None:
    reconcile_hooks.clear(deployment_id)  # a change from now on nudges again
    reconciler.reconcile_deployment(deployment_id)


@shared_task(name="deployments.tasks.reconcile_all", ignore_result=True)
def reconcile_all() -> None:
    reconciler.reconcile_all()
