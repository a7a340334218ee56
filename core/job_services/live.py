"""Live job updates: typed payloads and their Channels pushes.

Progress and transitions reach browsers on the groups ``job.<id>``, ``node.<id>``,
``<target>.<id>`` (e.g. ``variant.7``) and, for transitions only, ``jobs``.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, TypedDict

from django.db import transaction

from core import live
from core.job_services.dependencies import waiting_for
from core.jobs import Job

JOBS_GROUP = live.JOBS_GROUP
MESSAGE_TYPE = "job.update"
# Live progress pushes per job are spaced at least this far apart (transitions always go).
PUSH_MIN_INTERVAL_S = 0.3


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
