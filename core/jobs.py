"""Jobs are rows: a state machine with progress, a lease, a log tail and an outcome.

Celery messages only nudge; the row is the record. A worker claims a job with a conditional
UPDATE (state and lease checked), renews the lease while it works, and a reconciler re-queues
jobs whose lease ran out (a killed agent or worker), so a lost or duplicated message changes
nothing in the end.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.versioning import VersionedModel

LOG_TAIL_CHARS = 16000


class JobState(models.TextChoices):
    # Created; waiting for a worker or agent to claim it.
    QUEUED = "queued", "Queued"
    # Claimed under a lease; progress is being reported.
    RUNNING = "running", "Running"
    # Finished and its outcome recorded.
    SUCCEEDED = "succeeded", "Succeeded"
    # Gave up (after retries where retrying could help); ``error`` says why and what to do.
    FAILED = "failed", "Failed"
    # Stopped at an operator's request; temporary files were cleaned.
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobKind(models.TextChoices):
    # Control plane: fetch a variant's files from the upstream hub into the fleet store.
    CACHE_VARIANT = "cache_variant", "Cache variant in the fleet store"
    # Node agent: download a variant from the mirror into the node's data dir.
    DOWNLOAD = "download", "Download to node"
    # Node agent: quantize a variant (GGUF via llama.cpp, ONNX Runtime int8/int4) into new
    # evaluated variants, uploaded to the fleet store.
    QUANTIZE = "quantize", "Quantize"
    # Control worker: a serving benchmark (benchmarks.execute) against a deployment or replicas.
    BENCHMARK = "benchmark", "Benchmark"
    # Control worker: a model test suite's cases against a deployment or replicas.
    TEST_SUITE = "test_suite", "Test suite"


class Job(VersionedModel):
    kind = models.CharField(max_length=32, choices=JobKind.choices)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    node = models.ForeignKey(
        "fleet.Node", models.CASCADE, null=True, blank=True, related_name="jobs"
    )
    target_type = models.CharField(max_length=60)
    target_id = models.CharField(max_length=64)
    target_name = models.CharField(max_length=200)
    params = models.JSONField(default=dict, blank=True)
    # {"stage", "bytes_done", "bytes_total", "rate_bps", "eta_s", "current_file", "percent"}
    progress = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    actor_type = models.CharField(max_length=8)
    actor_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["state", "lease_expires_at"]),
            models.Index(fields=["target_type", "target_id"]),
        ]

    def __str__(self) -> str:
        where = f" on {self.node}" if self.node_id else ""
        return f"{self.get_kind_display()} {self.target_name}{where}"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return round((end - self.started_at).total_seconds(), 1)

    def lease_expired(self, now: Any = None) -> bool:
        now = now or timezone.now()
        return self.lease_expires_at is not None and self.lease_expires_at < now

    @staticmethod
    def lease_until(now: Any = None) -> Any:
        return (now or timezone.now()) + timedelta(seconds=settings.FLEET_JOB_LEASE_SECONDS)

    def append_log(self, text: str) -> None:
        self.log_tail = (self.log_tail + text)[-LOG_TAIL_CHARS:]
