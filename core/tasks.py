from __future__ import annotations

from celery import shared_task
from django.core.management import call_command

from core.durations import timed


@shared_task(name="core.tasks.clear_expired_sessions")
def clear_expired_sessions() -> None:
    call_command("clearsessions")


@shared_task(name="core.tasks.purge_idempotency_keys", ignore_result=True)
def purge_idempotency_keys() -> int:
    from core.idempotency import purge_expired

    return purge_expired()


@shared_task(name="core.tasks.reconcile_jobs", ignore_result=True)
@timed("jobs")
def reconcile_jobs() -> None:
    """Re-queue jobs whose lease ran out and re-send queued jobs whose message may be lost."""
    from core import job_services

    job_services.reconcile()
