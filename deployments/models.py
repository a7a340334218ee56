"""Deployments, their immutable revisions, replicas and rollouts."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.models import AppendOnlyError, VersionedModel
from deployments.choices import DeploymentState, ReplicaState, RolloutState


class Deployment(VersionedModel):
    """A named service: which revision is wanted, which was last stable, and its state.

    ``desired_replicas`` is the replica count wanted now (``replicas`` is the reverse
    relation to the Replica rows). Like Kubernetes, scaling is not a new revision: it changes
    this field only; a revision's ``spec["replicas"]`` records the count when that revision
    was made (docs/deployments.md).
    """

    name = models.SlugField(max_length=63, unique=True)
    state = models.CharField(
        max_length=16, choices=DeploymentState.choices, default=DeploymentState.ACTIVE
    )
    current_revision = models.ForeignKey(
        "DeploymentRevision", models.SET_NULL, null=True, blank=True, related_name="+"
    )
    stable_revision = models.ForeignKey(
        "DeploymentRevision", models.SET_NULL, null=True, blank=True, related_name="+"
    )
    desired_replicas = models.PositiveIntegerField(default=1)
    revision_history_limit = models.PositiveIntegerField(default=10)
    paused_reason = models.TextField(blank=True)
    # Set by a delete: the deployment is stopped and the row goes once its replicas are gone.
    deletion_requested_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.current_revision.spec) if self.current_revision else {}

    @property
    def autoscaling(self) -> Any:
        """Its current revision's autoscaling policy (``.enabled`` False when off)."""
        from deployments.autoscaling import policy_of

        return policy_of(self.current_revision.spec if self.current_revision else None)

    def get_status(self, ready: int, up_to_date: int, rollout_state: str | None = None) -> str:
        """What the deployment is doing, from its state and its replicas' (one of STATUSES).

        ``ready``: available replicas of any revision; ``up_to_date``: live replicas of the
        current revision; ``rollout_state``: the latest rollout's state, if any.
        """
        if self.deletion_requested_at is not None:
            return "deleting"
        if self.state != DeploymentState.ACTIVE:
            return str(self.state)
        if rollout_state == RolloutState.FAILED:
            return "failed"
        if ready >= self.desired_replicas and up_to_date == self.desired_replicas:
            return "available"
        if rollout_state == RolloutState.RUNNING or up_to_date < self.desired_replicas:
            return "progressing"
        return "degraded"


# Deployment.get_status() values: the three states, and while active what the replicas do.
STATUSES = (
    ("available", "Available: every replica is up to date and available"),
    ("progressing", "Progressing: replicas are being placed, started or replaced"),
    ("degraded", "Degraded: fewer replicas available than desired"),
    ("failed", "Failed: the latest rollout failed"),
    (DeploymentState.PAUSED, "Paused"),
    (DeploymentState.STOPPED, "Stopped"),
    ("deleting", "Deleting: stopped; removed once its replicas are gone"),
)


class DeploymentRevision(models.Model):
    """Revision N of a deployment's spec. Never changed after creation (only ``rollbackable``
    is cleared when it falls out of the retained window)."""

    deployment = models.ForeignKey(Deployment, models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    variant = models.ForeignKey(
        "models_catalog.Variant", models.PROTECT, related_name="deployment_revisions"
    )
    runtime = models.CharField(max_length=16)
    diff = models.JSONField(default=dict, blank=True, help_text="Changes against revision N-1.")
    author_type = models.CharField(max_length=8)
    author_name = models.CharField(max_length=150)
    reason = models.TextField(blank=True)
    rollbackable = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["deployment", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "number"], name="deployments_revision_unique_number"
            )
        ]

    def __str__(self) -> str:
        return f"{self.deployment.name} r{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("Deployment revisions are immutable; create a new one.")
        super().save(*args, **kwargs)


class Replica(models.Model):
    """One slot of a deployment at one revision, placed on a node as one container."""

    deployment = models.ForeignKey(Deployment, models.CASCADE, related_name="replicas")
    revision = models.ForeignKey(DeploymentRevision, models.CASCADE, related_name="replicas")
    slot = models.PositiveIntegerField()
    node = models.ForeignKey(
        "fleet.Node", models.SET_NULL, null=True, blank=True, related_name="replicas"
    )
    state = models.CharField(
        max_length=16, choices=ReplicaState.choices, default=ReplicaState.PENDING
    )
    reason = models.TextField(blank=True, help_text="Why it is pending or failed.")
    container_name = models.CharField(max_length=128, blank=True)
    container_id = models.CharField(max_length=64, blank=True)
    host_port = models.PositiveIntegerField(null=True, blank=True)
    # What placement reserved on the node: the footprint on "cpu" (RAM) or "gpu" (split
    # evenly over ``gpu_indices``), counted against the node's free memory until gone.
    reserved_device = models.CharField(max_length=8, blank=True)
    reserved_bytes = models.BigIntegerField(default=0)
    gpu_indices = models.JSONField(default=list, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    download_job = models.ForeignKey(
        "core.Job", models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    healthy_since = models.DateTimeField(null=True, blank=True)
    available_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # Set while a scale-down drains it (stopping, its container not yet told to stop): the
    # gateways stop routing to it first and its requests finish; stopped by this time at
    # the latest (FLEET_DRAIN_SECONDS).
    drain_until = models.DateTimeField(null=True, blank=True)
    # The container's log lines last fetched ("<timestamp> <line>", oldest first), kept here
    # so they outlive the container (deployments/logs.py); when they were last merged in.
    last_logs = models.TextField(blank=True)
    logs_fetched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["deployment", "slot", "-created_at"]
        indexes = [
            models.Index(fields=["deployment", "state"]),
            models.Index(fields=["node", "state"]),
        ]

    def __str__(self) -> str:
        return f"{self.deployment.name}[{self.slot}] r{self.revision.number}"

    @property
    def endpoint(self) -> str:
        """``http://host:port`` of the server, once it has a node and a port."""
        if self.node is None or not self.host_port or self.state == ReplicaState.GONE:
            return ""
        host = self.node.replica_address
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return f"http://{host}:{self.host_port}"


class Rollout(models.Model):
    """Moving a deployment from one revision to another, in batches, with health gates."""

    deployment = models.ForeignKey(Deployment, models.CASCADE, related_name="rollouts")
    from_revision = models.ForeignKey(
        DeploymentRevision, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    to_revision = models.ForeignKey(DeploymentRevision, models.CASCADE, related_name="+")
    state = models.CharField(
        max_length=16, choices=RolloutState.choices, default=RolloutState.RUNNING
    )
    is_rollback = models.BooleanField(default=False)
    steps = models.JSONField(default=list, blank=True, help_text="What each batch did, when.")
    failure_reason = models.TextField(blank=True)
    # The benchmark / test-suite gate of the new revision (deployments.gates): {"state",
    # "started_at", "benchmark_run", "suite_runs", "figures", "checks", "summary"}; {} if none.
    gate = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    last_progress_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.deployment.name} → r{self.to_revision.number}"
