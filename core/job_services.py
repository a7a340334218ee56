"""The life of a job row: create, dispatch, claim, progress, finish, cancel, retry, reconcile.

A Celery message only nudges a worker or agent; the row in PostgreSQL is the record:

- ``create_job`` writes the row and, on commit, *dispatches* it (sends the message). A queued
  job's ``lease_expires_at`` is its dispatch deadline: still queued after it, the message is
  presumed lost and :func:`reconcile` sends it again.
- ``claim`` is a conditional UPDATE (queued → running under a lease held by ``owner``, a node
  name or a worker id); zero rows means someone else has it, or it is finished or waiting.
- ``report_progress`` renews the lease; the answer tells the worker whether to go on
  (cancel requested, lease lost).
- ``finish`` records the outcome; a retryable failure goes back to the queue with backoff
  until ``max_attempts``.
- ``reconcile`` (periodic) puts running jobs whose lease ran out back in the queue (a killed
  agent or worker), re-sends queued jobs whose message may be lost, and settles jobs waiting
  on a job that failed.

What a kind of job does beyond this (which queue, what the agent needs, bookkeeping on
success) lives in a :class:`JobKindHandler` registered by the owning app in its
``job_kinds`` module. Every user-visible transition writes a history event; progress and
transitions reach browsers on the Channels groups ``job.<id>``, ``node.<id>``,
``<target>.<id>`` (e.g. ``variant.7``) and, for transitions only, ``jobs``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules

from core import live
from core.errors import ConflictError, ServiceError
from core.history import ChangeContext, record
from core.jobs import FINISHED_STATES, Job, JobState

log = logging.getLogger(__name__)

JOBS_GROUP = live.JOBS_GROUP
MESSAGE_TYPE = "job.update"
# A queued job still unclaimed this long after its message was sent is sent again.
REDISPATCH_AFTER_SECONDS = 30
# Live progress pushes per job are spaced at least this far apart (transitions always go).
PUSH_MIN_INTERVAL_S = 0.3
RETRY_BACKOFF_BASE_S = 5.0
RETRY_BACKOFF_CAP_S = 300.0
RECONCILE_BATCH = 500
LOG_LINE_MAX = 2000

# params keys owned by this module
AFTER_JOB = "after_job"  # id of a job this one waits for (e.g. the cache job)


# --- Kinds ----------------------------------------------------------------------------------
class JobKindHandler:
    """What one kind of job needs beyond the generic state machine. Subclass per kind."""

    kind: str = ""

    def dispatch(self, job: Job) -> None:
        """Send the nudge (a Celery message) that makes a worker or agent claim ``job``."""
        raise NotImplementedError

    def check_result(self, job: Job, result: dict[str, Any]) -> str:
        """A worker's success report checked against what was asked; '' or what is wrong."""
        return ""

    def on_finished(self, job: Job, ctx: ChangeContext) -> None:
        """Bookkeeping inside the transaction that finished ``job`` (any final state)."""

    def on_retry(self, ctx: ChangeContext, job: Job) -> None:
        """Before a failed or cancelled job goes back to the queue (may set a dependency)."""

    def message_expires(self) -> float:
        """Seconds a dispatch message stays valid on the broker."""
        return float(settings.FLEET_COMMAND_TTL_SECONDS)


_handlers: dict[str, JobKindHandler] = {}
_discovered = False
_discover_lock = threading.Lock()


def register_kind(handler: JobKindHandler) -> JobKindHandler:
    _handlers[handler.kind] = handler
    return handler


def handler_for(kind: str) -> JobKindHandler:
    global _discovered
    if not _discovered:
        with _discover_lock:
            if not _discovered:
                autodiscover_modules("job_kinds")
                _discovered = True
    try:
        return _handlers[kind]
    except KeyError:
        raise ServiceError(f"No handler is registered for jobs of kind {kind!r}.") from None


# --- Live payloads --------------------------------------------------------------------------
class JobPayload(TypedDict):
    id: int
    kind: str
    kind_display: str
    state: str
    node: int | None
    node_name: str | None
    target_type: str
    target_id: str
    target_name: str
    progress: dict[str, Any]
    error: str
    attempts: int
    max_attempts: int
    cancel_requested: bool
    waiting_for: int | None
    actor_name: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    duration_seconds: float | None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def job_payload(job: Job) -> JobPayload:
    return {
        "id": job.pk,
        "kind": job.kind,
        "kind_display": job.get_kind_display(),
        "state": job.state,
        "node": job.node_id,
        "node_name": job.node.name if job.node_id and job.node else None,
        "target_type": job.target_type,
        "target_id": job.target_id,
        "target_name": job.target_name,
        "progress": job.progress or {},
        "error": job.error,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested,
        "waiting_for": waiting_for(job),
        "actor_name": job.actor_name,
        "created_at": _iso(job.created_at) or "",
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "duration_seconds": job.duration_seconds,
    }


def groups_for(job: Job) -> list[str]:
    groups = [f"job.{job.pk}"]
    if job.node_id:
        groups.append(f"node.{job.node_id}")
    if job.target_type and job.target_id:
        groups.append(f"{job.target_type.rsplit('.', 1)[-1]}.{job.target_id}")
    return groups


_last_push: dict[int, float] = {}
_push_lock = threading.Lock()


def push(job_id: int, *, transition: bool) -> None:
    """Send the job's current row to its groups; progress pushes are rate-limited per job."""
    now = time.monotonic()
    with _push_lock:
        if not transition and now - _last_push.get(job_id, 0.0) < PUSH_MIN_INTERVAL_S:
            return
        _last_push[job_id] = now
        if len(_last_push) > 10000:
            _last_push.clear()
    job = Job.objects.select_related("node").filter(pk=job_id).first()
    if job is None:
        return
    payload = dict(job_payload(job))
    payload["transition"] = transition
    for group in groups_for(job):
        live.send(group, MESSAGE_TYPE, payload)
    if transition:
        live.send(JOBS_GROUP, MESSAGE_TYPE, payload)


def _push_on_commit(job_id: int, *, transition: bool = True) -> None:
    transaction.on_commit(lambda: push(job_id, transition=transition))


# --- Helpers --------------------------------------------------------------------------------
def waiting_for(job: Job) -> int | None:
    value = (job.params or {}).get(AFTER_JOB)
    return int(value) if isinstance(value, int) else None


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


def dependency_state(job: Job) -> str | None:
    """The state of the job ``job`` waits for; None when it waits for nothing."""
    after = waiting_for(job)
    if after is None:
        return None
    state = Job.objects.filter(pk=after).values_list("state", flat=True).first()
    return state or JobState.FAILED  # a deleted dependency cannot succeed any more


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
