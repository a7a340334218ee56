"""Rollups and retention of metric samples (run by beat through ``monitoring.tasks``).

Neither writes history rows: they follow the configured retention, they change nothing a
person decided, and they run every minute. Both are safe to run twice or concurrently
(rollups upsert; partition DDL is ``IF [NOT] EXISTS``), and under a transaction-level
advisory lock on PostgreSQL so two beats never do the work twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Sum
from django.db.models.functions import TruncMinute

from monitoring import partitions
from monitoring.models import Rollup, RollupState, Sample

log = logging.getLogger(__name__)

ROLLUP_LOCK = 7_270_001
RETENTION_LOCK = 7_270_002
# Minutes before the previous run's end recomputed every run (samples a few seconds late).
OVERLAP = timedelta(minutes=2)
FIRST_RUN_BACK = timedelta(hours=1)


def _advisory_lock(key: int) -> bool:
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cursor.fetchone()[0])


@dataclass
class RollupResult:
    start: datetime | None = None
    end: datetime | None = None
    rows: int = 0
    skipped: bool = False


def roll_up(now: datetime | None = None) -> RollupResult:
    """Aggregate raw samples into 1-minute rollups up to the last whole minute.

    Recomputes from the previous end minus :data:`OVERLAP`, or from the earliest minute
    that late samples touched (an agent's buffer flushed after an outage).
    """
    now = now or datetime.now(UTC)
    end = now.replace(second=0, microsecond=0)
    with transaction.atomic():
        if not _advisory_lock(ROLLUP_LOCK):
            return RollupResult(skipped=True)
        state, _ = RollupState.objects.select_for_update().get_or_create(pk=1)
        start = (state.done_until - OVERLAP) if state.done_until else end - FIRST_RUN_BACK
        dirty = state.dirty_since
        if dirty is not None and dirty < start:
            start = dirty
        start = max(start, now - timedelta(hours=settings.FLEET_METRICS_RAW_RETENTION_HOURS))
        start = start.replace(second=0, microsecond=0)
        groups = (
            Sample.objects.filter(ts__gte=start, ts__lt=end)
            .annotate(minute=TruncMinute("ts", tzinfo=UTC))
            .values("series_id", "minute")
            .annotate(n=Count("value"), total=Sum("value"), low=Min("value"), high=Max("value"))
            .order_by()
        )
        rows = [
            (g["series_id"], g["minute"], g["n"], g["total"], g["low"], g["high"]) for g in groups
        ]
        if rows:
            partitions.ensure(partitions.ROLLUPS, {row[1] for row in rows})
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO monitoring_rollup (series_id, minute, count, total, low, high) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (series_id, minute) DO UPDATE "
                    "SET count = excluded.count, total = excluded.total, low = excluded.low, "
                    "high = excluded.high",
                    rows,
                )
        RollupState.objects.filter(pk=1).update(done_until=end)
        if dirty is not None:
            RollupState.objects.filter(pk=1, dirty_since=dirty).update(dirty_since=None)
    log.info("rolled up %d series-minutes from %s to %s", len(rows), start, end)
    return RollupResult(start=start, end=end, rows=len(rows))


@dataclass
class RetentionResult:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deleted_rows: int = 0
    skipped: bool = False


def maintain_partitions(now: datetime | None = None) -> RetentionResult:
    """Create partitions ahead (6 hours, 2 days) and drop those past retention.

    Databases without partitions (the embedded SQLite mode) delete old rows instead.
    """
    now = now or datetime.now(UTC)
    raw_cutoff = now - timedelta(hours=settings.FLEET_METRICS_RAW_RETENTION_HOURS)
    rollup_cutoff = now - timedelta(days=settings.FLEET_METRICS_ROLLUP_RETENTION_DAYS)
    result = RetentionResult()
    with transaction.atomic():
        if not _advisory_lock(RETENTION_LOCK):
            return RetentionResult(skipped=True)
        if partitions.is_partitioned():
            result.created += partitions.ensure_ahead(partitions.SAMPLES, now, behind=1, ahead=6)
            result.created += partitions.ensure_ahead(partitions.ROLLUPS, now, behind=0, ahead=2)
            result.dropped += partitions.drop_before(partitions.SAMPLES, raw_cutoff)
            result.dropped += partitions.drop_before(partitions.ROLLUPS, rollup_cutoff)
        else:
            result.deleted_rows += Sample.objects.filter(ts__lt=raw_cutoff).delete()[0]
            result.deleted_rows += Rollup.objects.filter(minute__lt=rollup_cutoff).delete()[0]
    if result.dropped or result.deleted_rows:
        log.info(
            "metrics retention: dropped %s, deleted %d rows", result.dropped, result.deleted_rows
        )
    return result
