"""Repair of the job table: leases handed back or run out, lost messages, broken dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.history import record
from core.job_services.dependencies import dependency_state, waiting_for
from core.job_services.lifecycle import _log_line, _settle, _state_change, dispatch, system_context
from core.job_services.live import _push_on_commit
from core.jobs import FINISHED_STATES, Job, JobState

RECONCILE_BATCH = 500


def release_leases(owner: str, *, node_id: int) -> list[int]:
    """A restarted agent hands back the jobs it held: they are re-queued and sent again now,
    instead of waiting for their leases to run out (the download resumes where it stopped)."""
    now = timezone.now()
    held = list(
        Job.objects.filter(node_id=node_id, state=JobState.RUNNING, lease_owner=owner).values_list(
            "pk", flat=True
        )
    )
    if held:
        Job.objects.filter(pk__in=held, state=JobState.RUNNING).update(
            lease_expires_at=now - timedelta(seconds=1)
        )
        reconcile(now)
    return held


# --- Reconciliation -------------------------------------------------------------------------
@dataclass
class ReconcileReport:
    requeued: list[int]
    failed: list[int]
    dispatched: list[int]
    settled: list[int]


def reconcile(now: datetime | None = None) -> ReconcileReport:
    """Level-triggered repair of the job table; safe to run anywhere, any number of times."""
    now = now or timezone.now()
    report = ReconcileReport([], [], [], [])
    ctx = system_context()

    # 1. Running jobs whose lease ran out: the worker or agent died (or lost the network).
    expired = Job.objects.filter(state=JobState.RUNNING, lease_expires_at__lt=now).values_list(
        "pk", flat=True
    )[:RECONCILE_BATCH]
    for pk in list(expired):
        with transaction.atomic():
            job = (
                Job.objects.select_for_update(skip_locked=True)
                .filter(pk=pk, state=JobState.RUNNING, lease_expires_at__lt=now)
                .first()
            )
            if job is None:
                continue
            owner = job.lease_owner
            if job.cancel_requested:
                job.lease_owner = ""
                _settle(job, JobState.CANCELLED, ctx)
                report.failed.append(pk)
                continue
            if job.attempts >= job.max_attempts:
                _settle(
                    job,
                    JobState.FAILED,
                    ctx,
                    error=(
                        f"{owner or 'The worker'} stopped reporting {job.attempts} times (lease "
                        "expired each time). Check that the node's agent (or the control worker) "
                        "runs and reaches the server, then retry."
                    ),
                )
                report.failed.append(pk)
                continue
            job.state = JobState.QUEUED
            job.lease_owner = ""
            job.lease_expires_at = None
            job.append_log(
                _log_line(f"lease held by {owner} expired; queued again (resumes where it stopped)")
            )
            job.version += 1
            job.save()
            record(
                ctx,
                "requeued",
                job,
                changes={
                    **_state_change(JobState.RUNNING, JobState.QUEUED),
                    "lease_owner": {"before": owner, "after": ""},
                },
            )
            _push_on_commit(pk)
            report.requeued.append(pk)  # sent below, with the other queued jobs

    # 2. Queued jobs: cancelled before anyone claimed them, waiting on a job that failed,
    #    or past their dispatch deadline (message lost, agent offline, backoff over).
    queued = Job.objects.filter(state=JobState.QUEUED).filter(
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now) | Q(cancel_requested=True)
    )[:RECONCILE_BATCH]
    for job in list(queued):
        if job.cancel_requested:
            with transaction.atomic():
                locked = (
                    Job.objects.select_for_update(skip_locked=True)
                    .filter(pk=job.pk, state=JobState.QUEUED)
                    .first()
                )
                if locked is not None:
                    _settle(locked, JobState.CANCELLED, ctx)
                    report.settled.append(job.pk)
            continue
        dep = dependency_state(job)
        if dep is not None and dep != JobState.SUCCEEDED:
            if dep in FINISHED_STATES:
                with transaction.atomic():
                    locked = (
                        Job.objects.select_for_update(skip_locked=True)
                        .filter(pk=job.pk, state=JobState.QUEUED)
                        .first()
                    )
                    if locked is not None:
                        after = waiting_for(locked)
                        _settle(
                            locked,
                            JobState.FAILED,
                            ctx,
                            error=f"Job #{after}, which this job waits for, {dep}. "
                            "Retry this job to try again.",
                        )
                        report.settled.append(job.pk)
            continue
        if dispatch(job.pk):
            report.dispatched.append(job.pk)
    return report
