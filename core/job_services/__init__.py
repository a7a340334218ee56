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

The package: ``kinds`` (handlers and their registry), ``dependencies`` (a job waiting for
another), ``live`` (payloads and Channels pushes), ``lifecycle`` (the state machine of one
job) and ``reconciliation`` (repair of the whole table). Import from ``core.job_services``.
"""

from core.job_services.dependencies import AFTER_JOB, dependency_state, waiting_for
from core.job_services.kinds import JobKindHandler, handler_for, register_kind
from core.job_services.lifecycle import (
    LOG_LINE_MAX,
    REDISPATCH_AFTER_SECONDS,
    RETRY_BACKOFF_BASE_S,
    RETRY_BACKOFF_CAP_S,
    Outcome,
    ProgressAnswer,
    claim,
    complete_at_once,
    create_job,
    dispatch,
    finish,
    report_progress,
    request_cancel,
    retry,
    system_context,
)
from core.job_services.live import (
    JOBS_GROUP,
    MESSAGE_TYPE,
    PUSH_MIN_INTERVAL_S,
    JobPayload,
    groups_for,
    job_payload,
    push,
)
from core.job_services.reconciliation import (
    RECONCILE_BATCH,
    ReconcileReport,
    reconcile,
    release_leases,
)

__all__ = [
    "AFTER_JOB",
    "JOBS_GROUP",
    "LOG_LINE_MAX",
    "MESSAGE_TYPE",
    "PUSH_MIN_INTERVAL_S",
    "RECONCILE_BATCH",
    "REDISPATCH_AFTER_SECONDS",
    "RETRY_BACKOFF_BASE_S",
    "RETRY_BACKOFF_CAP_S",
    "JobKindHandler",
    "JobPayload",
    "Outcome",
    "ProgressAnswer",
    "ReconcileReport",
    "claim",
    "complete_at_once",
    "create_job",
    "dependency_state",
    "dispatch",
    "finish",
    "groups_for",
    "handler_for",
    "job_payload",
    "push",
    "reconcile",
    "register_kind",
    "release_leases",
    "report_progress",
    "request_cancel",
    "retry",
    "system_context",
    "waiting_for",
]
