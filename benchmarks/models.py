"""Benchmark profiles and runs, test suites and their runs.

A run is executed by a job (``core.jobs.Job``, kind ``benchmark`` or ``test_suite``) on the
control worker: the job row carries state, lease, progress and cancel; the run row carries
what was measured. Runs keep a copy of their profile or suite as it was, so a later edit
never changes what an old run means.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.versioning import VersionedModel


class TargetKind(models.TextChoices):
    # Through the gateway, as applications call it (every available replica of it).
    DEPLOYMENT = "deployment", "Deployment (through the gateway)"
    # One replica's server directly, without the gateway.
    REPLICA = "replica", "One replica directly"


class BenchmarkProfile(VersionedModel):
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    spec = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TestSuite(VersionedModel):
    __test__ = False  # not a pytest class
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    cases = models.JSONField(default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RunBase(models.Model):
    """What both kinds of run share: the job, the target(s), who asked, the rollout gate."""

    job = models.OneToOneField("core.Job", models.CASCADE, related_name="+")
    target_kind = models.CharField(max_length=12, choices=TargetKind.choices)
    deployment = models.ForeignKey(
        "deployments.Deployment", models.SET_NULL, null=True, blank=True, related_name="+"
    )
    deployment_name = models.CharField(max_length=200)
    # [{"label", "url", "model", "replica", "revision", "node", "node_kind", "variant",
    #   "variant_name", "runtime"}] — what was measured, resolved when the run started.
    targets = models.JSONField(default=list, blank=True)
    # Set when a rollout gate started the run.
    rollout = models.ForeignKey(
        "deployments.Rollout", models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]


class BenchmarkRun(RunBase):
    profile = models.ForeignKey(
        BenchmarkProfile, models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    profile_name = models.CharField(max_length=100)
    profile_spec = models.JSONField(default=dict)
    # {"location", "host", "cores", "cpu_percent_mean", "cpu_percent_max"}: the generator's
    # own CPU (100 = one core), so a starved target is visible next to its figures.
    generator = models.JSONField(default=dict, blank=True)
    # [{"target": label, "levels": [figures of loadgen.summarize + "usage": {...}]}]
    results = models.JSONField(default=list, blank=True)

    class Meta(RunBase.Meta):
        pass

    def __str__(self) -> str:
        return f"benchmark {self.pk} of {self.deployment_name} ({self.profile_name})"


class SuiteRun(RunBase):
    suite = models.ForeignKey(
        TestSuite, models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    suite_name = models.CharField(max_length=100)
    cases = models.JSONField(default=list)
    # [{"target": label, "passed", "failed", "pass_rate",
    #   "cases": [{"name", "passed", "why", "answer", "tokens", "latency_ms", "error"}]}]
    results = models.JSONField(default=list, blank=True)

    class Meta(RunBase.Meta):
        pass

    def __str__(self) -> str:
        return f"suite {self.suite_name} on {self.deployment_name} (run {self.pk})"
