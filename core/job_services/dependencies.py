"""A job waiting for another (e.g. a download waiting for its cache job)."""

from __future__ import annotations

from core.jobs import Job, JobState

# params keys owned by the job services
AFTER_JOB = "after_job"  # id of a job this one waits for (e.g. the cache job)


def waiting_for(job: Job) -> int | None:
    value = (job.params or {}).get(AFTER_JOB)
    return int(value) if isinstance(value, int) else None


def dependency_state(job: Job) -> str | None:
    """The state of the job ``job`` waits for; None when it waits for nothing."""
    after = waiting_for(job)
    if after is None:
        return None
    state = Job.objects.filter(pk=after).values_list("state", flat=True).first()
    return state or JobState.FAILED  # a deleted dependency cannot succeed any more
