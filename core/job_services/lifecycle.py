"""The state machine of one job: create, dispatch, claim, progress, finish, cancel, retry."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from core.errors import ConflictError, ServiceError
from core.history import ChangeContext, record
from core.job_services.dependencies import AFTER_JOB, dependency_state
from core.job_services.kinds import handler_for
from core.job_services.live import _push_on_commit, push
from core.jobs import Job, JobState

log = logging.getLogger(__name__)

# A queued job still unclaimed this long after its message was sent is sent again.
REDISPATCH_AFTER_SECONDS = 30
RETRY_BACKOFF_BASE_S = 5.0
RETRY_BACKOFF_CAP_S = 300.0
LOG_LINE_MAX = 2000


# --- Helpers --------------------------------------------------------------------------------
def _log_line(text: str) -> str:
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
    return "".join(f"{stamp} {line[:LOG_LINE_MAX]}\n" for line in text.splitlines() if line)


def _lease_until(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.FLEET_JOB_LEASE_SECONDS)


def _backoff(attempts: int) -> float:
    ceiling = min(RETRY_BACKOFF_CAP_S, RETRY_BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto


def system_context(reason: str = "") -> ChangeContext:
    return ChangeContext.system("jobs", reason=reason)


def _state_change(before: str, after: str) -> dict[str, dict[str, Any]]:
    return {"state": {"before": before, "after": after}}


# --- Create and dispatch --------------------------------------------------------------------
def create_job(
    ctx: ChangeContext,
    *,
    kind: str,
    target_type: str,
    target_id: str | int,
    target_name: str,
    node: Any = None,
    params: dict[str, Any] | None = None,
    max_attempts: int = 5,
    after: Job | None = None,
) -> Job:
    """Write a queued job and, once committed, send it (unless it waits for ``after``)."""
    handler_for(kind)  # fail early on an unknown kind
    params = dict(params or {})
    if after is not None:
        params[AFTER_JOB] = after.pk
    with transaction.atomic():
        job = Job.objects.create(
            kind=kind,
            node=node,
            target_type=target_type,
            target_id=str(target_id),
            target_name=target_name[:200],
            params=params,
            max_attempts=max_attempts,
            actor_type=ctx.actor_type,
            actor_name=ctx.actor_name[:150],
            log_tail=_log_line(f"created by {ctx.actor_name}"),
        )
        record(ctx, "created", job, changes={"state": {"before": None, "after": job.state}})
        job_id = job.pk
        transaction.on_commit(lambda: dispatch(job_id))
        _push_on_commit(job_id)
    return job


def dispatch(job_id: int) -> bool:
    """Send a queued job's message and set its re-dispatch deadline. False if not sendable."""
    job = Job.objects.select_related("node").filter(pk=job_id).first()
    if job is None or job.state != JobState.QUEUED or job.cancel_requested:
        return False
    dep = dependency_state(job)
    if dep is not None and dep != JobState.SUCCEEDED:
        return False
    deadline = timezone.now() + timedelta(seconds=REDISPATCH_AFTER_SECONDS)
    updated = Job.objects.filter(pk=job.pk, state=JobState.QUEUED).update(lease_expires_at=deadline)
    if not updated:
        return False
    try:
        handler_for(job.kind).dispatch(job)
    except Exception:  # the broker is down: the reconciler sends it again later
        log.warning("could not dispatch job %s", job.pk, exc_info=True)
        return False
    return True


# --- Claim, progress, finish ----------------------------------------------------------------
def claim(job_id: int, owner: str, *, node_id: int | None = None) -> Job | None:
    """Take a queued job under a lease; None when it is not claimable by ``owner``.

    The same owner may take back a running job whose lease it still holds (an agent that
    restarted before its lease ran out resumes at once instead of waiting for the lease).
    """
    now = timezone.now()
    claimable = Q(state=JobState.QUEUED, cancel_requested=False) | Q(
        state=JobState.RUNNING, lease_owner=owner
    )
    scope = Q(pk=job_id)
    if node_id is not None:
        scope &= Q(node_id=node_id)
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(scope & claimable).first()
        if job is None:
            return None
        dep = dependency_state(job)
        if dep is not None and dep != JobState.SUCCEEDED:
            return None
        first_start = job.started_at is None
        before = job.state
        job.state = JobState.RUNNING
        job.lease_owner = owner[:100]
        job.lease_expires_at = _lease_until(now)
        job.attempts = F("attempts") + 1
        job.started_at = job.started_at or now
        job.finished_at = None
        job.error = ""
        job.append_log(_log_line(f"claimed by {owner}"))
        job.version = F("version") + 1
        job.save(
            update_fields=[
                "state",
                "lease_owner",
                "lease_expires_at",
                "attempts",
                "started_at",
                "finished_at",
                "error",
                "log_tail",
                "version",
            ]
        )
        job.refresh_from_db()
        if first_start and before == JobState.QUEUED:
            record(
                ChangeContext.system(owner),
                "started",
                job,
                changes=_state_change(before, job.state),
            )
        _push_on_commit(job.pk)
    return job


@dataclass(frozen=True)
class ProgressAnswer:
    keep_going: bool  # False: the lease is lost or the job finished; stop without finishing
    cancel_requested: bool
    state: str


def report_progress(
    job_id: int,
    owner: str,
    progress: dict[str, Any],
    *,
    log_text: str = "",
    node_id: int | None = None,
) -> ProgressAnswer:
    """Store progress and renew the lease of a running job held by ``owner``."""
    now = timezone.now()
    scope = Q(pk=job_id) if node_id is None else Q(pk=job_id, node_id=node_id)
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(scope).first()
        if job is None:
            return ProgressAnswer(False, False, "gone")
        if job.state != JobState.RUNNING or job.lease_owner != owner:
            return ProgressAnswer(False, job.cancel_requested, job.state)
        job.progress = progress
        job.lease_expires_at = _lease_until(now)
        fields = ["progress", "lease_expires_at"]
        if log_text:
            job.append_log(_log_line(log_text))
            fields.append("log_tail")
        job.save(update_fields=fields)
        transaction.on_commit(lambda: push(job_id, transition=False))
        return ProgressAnswer(True, job.cancel_requested, job.state)


class Outcome:
    SUCCEEDED = JobState.SUCCEEDED.value
    FAILED = JobState.FAILED.value
    CANCELLED = JobState.CANCELLED.value


def finish(
    job_id: int,
    owner: str | None,
    *,
    outcome: str,
    result: dict[str, Any] | None = None,
    error: str = "",
    retryable: bool = False,
    log_text: str = "",
    progress: dict[str, Any] | None = None,
    ctx: ChangeContext | None = None,
    node_id: int | None = None,
) -> Job | None:
    """Record a running job's outcome. ``owner`` None: the control plane settles it itself.

    A retryable failure with attempts left goes back to the queue (dispatched again after a
    backoff); anything else is final and runs the kind's bookkeeping. A finish from a worker
    that no longer holds the lease changes nothing and returns None.
    """
    if outcome not in (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CANCELLED):
        raise ServiceError(f"Unknown outcome {outcome!r}.")
    now = timezone.now()
    scope = Q(pk=job_id) if node_id is None else Q(pk=job_id, node_id=node_id)
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(of=("self",)).select_related("node").filter(scope).first()
        )
        if job is None or job.is_finished:
            return None
        if owner is not None and (job.state != JobState.RUNNING or job.lease_owner != owner):
            return None
        ctx = ctx or ChangeContext.system(owner or "jobs")
        handler = handler_for(job.kind)
        if outcome == Outcome.SUCCEEDED:
            problem = handler.check_result(job, result or {})
            if problem:
                outcome, error, retryable = Outcome.FAILED, problem, False
        if progress is not None:
            job.progress = progress
        before = job.state
        if log_text:
            job.append_log(_log_line(log_text))
        if outcome == Outcome.FAILED and error:
            job.append_log(_log_line(f"error: {error}"))
        if (
            outcome == Outcome.FAILED
            and retryable
            and not job.cancel_requested
            and job.attempts < job.max_attempts
        ):
            delay = _backoff(job.attempts)
            job.state = JobState.QUEUED
            job.lease_owner = ""
            job.lease_expires_at = now + timedelta(seconds=delay)
            job.error = error[:4000]
            job.append_log(
                _log_line(
                    f"attempt {job.attempts} of {job.max_attempts} failed; retrying in "
                    f"{delay:.0f} s"
                )
            )
            job.version += 1
            job.save()
            _push_on_commit(job.pk)
            return job
        if job.cancel_requested and outcome == Outcome.FAILED and not error:
            outcome = Outcome.CANCELLED
        job.state = outcome
        job.finished_at = now
        job.lease_owner = ""
        job.lease_expires_at = None
        job.error = error[:4000] if outcome == Outcome.FAILED else ""
        if result is not None:
            job.result = result
        if outcome == Outcome.SUCCEEDED:
            job.progress = {**(job.progress or {}), "percent": 100.0, "eta_s": 0}
        job.append_log(_log_line(f"{outcome}"))
        job.version += 1
        job.save()
        verb = {"succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled"}[outcome]
        changes = _state_change(before, job.state)
        if job.error:
            changes["error"] = {"before": "", "after": job.error}
        record(ctx, verb, job, changes=changes)
        handler.on_finished(job, ctx)
        _settle_dependents(job, ctx)
        _push_on_commit(job.pk)
    return job


def _settle_dependents(job: Job, ctx: ChangeContext) -> None:
    """Jobs waiting for ``job``: sent once it succeeded, failed with it otherwise."""
    dependents = list(
        Job.objects.filter(state=JobState.QUEUED, **{f"params__{AFTER_JOB}": job.pk}).order_by("pk")
    )
    for dependent in dependents:
        if job.state == JobState.SUCCEEDED:
            dependent_id = dependent.pk
            transaction.on_commit(lambda pk=dependent_id: dispatch(pk))  # type: ignore[misc]
            continue
        reason = (
            f"Job #{job.pk} ({job.get_kind_display().lower()}), which this job waits for, "
            f"{job.state}"
        )
        message = f"{reason}: {job.error}" if job.error else f"{reason}."
        _settle(dependent, JobState.FAILED, ctx, error=message + " Retry this job to try again.")


def _settle(job: Job, state: str, ctx: ChangeContext, *, error: str = "") -> None:
    """Move an unclaimed (queued) job straight to a final state."""
    before = job.state
    job.state = state
    job.finished_at = timezone.now()
    job.lease_owner = ""
    job.lease_expires_at = None
    job.error = error[:4000]
    job.append_log(_log_line(f"{state}" + (f": {error}" if error else "")))
    job.version += 1
    job.save()
    record(ctx, state, job, changes=_state_change(before, state))
    handler_for(job.kind).on_finished(job, ctx)
    _settle_dependents(job, ctx)
    _push_on_commit(job.pk)


def complete_at_once(ctx: ChangeContext, job: Job, *, result: dict[str, Any], note: str) -> Job:
    """Finish a just-created job that needs no worker (e.g. the variant is already there)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.state != JobState.QUEUED:
            return job
        now = timezone.now()
        job.state = JobState.SUCCEEDED
        job.started_at = job.started_at or now
        job.finished_at = now
        job.lease_expires_at = None
        job.result = result
        job.progress = {"stage": "done", "percent": 100.0, "eta_s": 0}
        job.append_log(_log_line(note))
        job.version += 1
        job.save()
        record(ctx, "succeeded", job, changes=_state_change(JobState.QUEUED, job.state))
        handler_for(job.kind).on_finished(job, ctx)
        _push_on_commit(job.pk)
    return job


# --- Operator actions -----------------------------------------------------------------------
def request_cancel(ctx: ChangeContext, job: Job) -> Job:
    """Cancel: a queued job stops at once; a running one is told with its next progress answer."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.is_finished:
            raise ConflictError(f"Job #{job.pk} has already {job.state}; nothing to cancel.")
        if job.state == JobState.QUEUED:
            _settle(job, JobState.CANCELLED, ctx)
            return job
        if not job.cancel_requested:
            job.cancel_requested = True
            job.append_log(_log_line(f"cancel requested by {ctx.actor_name}"))
            job.version += 1
            job.save(update_fields=["cancel_requested", "log_tail", "version"])
            record(
                ctx,
                "cancel_requested",
                job,
                changes={"cancel_requested": {"before": False, "after": True}},
            )
            _push_on_commit(job.pk)
    return job


def retry(ctx: ChangeContext, job: Job) -> Job:
    """Put a failed or cancelled job back in the queue, with a fresh set of attempts."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise ConflictError(
                f"Only failed or cancelled jobs can be retried; job #{job.pk} is {job.state}."
            )
        before = job.state
        job.state = JobState.QUEUED
        job.attempts = 0
        job.error = ""
        job.result = {}
        job.cancel_requested = False
        job.finished_at = None
        job.lease_owner = ""
        job.lease_expires_at = None
        job.progress = {}
        job.params = {k: v for k, v in (job.params or {}).items() if k != AFTER_JOB}
        handler_for(job.kind).on_retry(ctx, job)
        job.append_log(_log_line(f"retried by {ctx.actor_name}"))
        job.version += 1
        job.save()
        record(ctx, "retried", job, changes=_state_change(before, job.state))
        job_id = job.pk
        transaction.on_commit(lambda: dispatch(job_id))
        _push_on_commit(job_id)
    return job
