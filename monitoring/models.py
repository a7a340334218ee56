"""Metric series, their raw samples (24 h) and 1-minute rollups (30 days).

On PostgreSQL both sample tables are range-partitioned by time (hourly for raw samples,
daily for rollups; see ``monitoring.partitions``): a chart query touches one or two small
partitions through the primary key, and retention drops whole partitions instead of
deleting rows. The primary key ``(series, ts)`` also makes ingestion idempotent: an agent
that re-sends a batch after a timeout stores nothing twice.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from monitoring.choices import Scope


class Series(models.Model):
    """One named figure of one replica or one node (or one GPU of a node)."""

    scope = models.CharField(max_length=8, choices=Scope.choices)
    name = models.CharField(max_length=48)
    node = models.ForeignKey("fleet.Node", models.CASCADE, related_name="metric_series")
    deployment = models.ForeignKey(
        "deployments.Deployment",
        models.CASCADE,
        null=True,
        blank=True,
        related_name="metric_series",
    )
    # The replica's id, not a foreign key: a replica row may go while its history stays.
    replica_id = models.BigIntegerField(default=0)
    # The GPU index for per-GPU node series, else "".
    device = models.CharField(max_length=16, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["node", "replica_id", "name", "device"]
        constraints = [
            models.UniqueConstraint(
                fields=["node", "replica_id", "name", "device"],
                name="monitoring_series_unique_key",
            )
        ]
        indexes = [models.Index(fields=["deployment", "name"])]
        verbose_name_plural = "series"

    def __str__(self) -> str:
        owner = f"replica {self.replica_id}" if self.replica_id else f"node {self.node_id}"
        device = f"[{self.device}]" if self.device else ""
        return f"{owner} {self.name}{device}"


class Sample(models.Model):
    """A raw sample. Kept ``FLEET_METRICS_RAW_RETENTION_HOURS`` (24 h)."""

    pk = models.CompositePrimaryKey("series_id", "ts")
    series = models.ForeignKey(Series, models.DO_NOTHING, db_constraint=False, related_name="+")
    ts = models.DateTimeField()
    value = models.FloatField()

    def __str__(self) -> str:
        return f"{self.series_id}@{self.ts.isoformat()}={self.value}"


class Rollup(models.Model):
    """One series over one minute. Kept ``FLEET_METRICS_ROLLUP_RETENTION_DAYS`` (30 days)."""

    pk = models.CompositePrimaryKey("series_id", "minute")
    series = models.ForeignKey(Series, models.DO_NOTHING, db_constraint=False, related_name="+")
    minute = models.DateTimeField()
    count = models.PositiveIntegerField()
    total = models.FloatField()
    low = models.FloatField()
    high = models.FloatField()

    def __str__(self) -> str:
        return f"{self.series_id}@{self.minute.isoformat()}: {self.count} samples"

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class RollupState(models.Model):
    """How far rollups are done, and the earliest minute that late samples changed since."""

    done_until = models.DateTimeField(null=True, blank=True)
    dirty_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rollups done until {self.done_until}"
