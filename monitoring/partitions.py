"""Time partitions of the sample tables (PostgreSQL; other databases use plain tables).

Raw samples live in hourly partitions (``monitoring_sample_p2026112606``), rollups in daily
ones (``monitoring_rollup_p20261126``). Partitions are created ahead of time by the
``monitoring.tasks.maintain_partitions`` beat task and, as a safety net, by ingestion for
any hour a batch touches that this process has not seen yet. Retention drops partitions
whose whole range is older than the cut-off: no row-by-row deletes, no table bloat.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection


@dataclass(frozen=True)
class PartitionedTable:
    table: str
    step: timedelta
    suffix_format: str

    def start_of(self, moment: datetime) -> datetime:
        moment = moment.astimezone(UTC)
        if self.step == timedelta(hours=1):
            return moment.replace(minute=0, second=0, microsecond=0)
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)

    def name_for(self, start: datetime) -> str:
        return f"{self.table}_p{start.strftime(self.suffix_format)}"


SAMPLES = PartitionedTable("monitoring_sample", timedelta(hours=1), "%Y%m%d%H")
ROLLUPS = PartitionedTable("monitoring_rollup", timedelta(days=1), "%Y%m%d")

_known: set[str] = set()  # partitions this process created or saw


def is_partitioned() -> bool:
    return connection.vendor == "postgresql"


def ensure(table: PartitionedTable, moments: Iterable[datetime]) -> list[str]:
    """Create the partitions covering ``moments`` (idempotent); the names created."""
    if not is_partitioned():
        return []
    starts = {table.start_of(moment) for moment in moments}
    created: list[str] = []
    for start in sorted(starts):
        name = table.name_for(start)
        if name in _known:
            continue
        with connection.cursor() as cursor:
            cursor.execute(
                f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{table.table}" '
                "FOR VALUES FROM (%s) TO (%s)",
                [start, start + table.step],
            )
        _known.add(name)
        created.append(name)
    return created


def ensure_ahead(table: PartitionedTable, now: datetime, *, behind: int, ahead: int) -> list[str]:
    start = table.start_of(now)
    return ensure(table, (start + table.step * k for k in range(-behind, ahead + 1)))


def existing(table: PartitionedTable) -> list[tuple[str, datetime]]:
    """(name, start) of every partition of ``table``, oldest first."""
    if not is_partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
            [table.table],
        )
        names = [row[0] for row in cursor.fetchall()]
    found: list[tuple[str, datetime]] = []
    prefix = f"{table.table}_p"
    for name in names:
        try:
            start = datetime.strptime(name[len(prefix) :], table.suffix_format).replace(tzinfo=UTC)
        except ValueError:
            continue  # not one of ours
        found.append((name, start))
    return sorted(found, key=lambda item: item[1])


def drop_before(table: PartitionedTable, cutoff: datetime) -> list[str]:
    """Drop every partition whose whole range ends at or before ``cutoff``."""
    dropped: list[str] = []
    for name, start in existing(table):
        if start + table.step <= cutoff:
            with connection.cursor() as cursor:
                cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
            _known.discard(name)
            dropped.append(name)
    return dropped


def forget() -> None:
    """Forget which partitions exist (after a test database is re-created)."""
    _known.clear()


CREATE_SQL = """
CREATE TABLE "monitoring_sample" (
    "series_id" bigint NOT NULL,
    "ts" timestamp with time zone NOT NULL,
    "value" double precision NOT NULL,
    PRIMARY KEY ("series_id", "ts")
) PARTITION BY RANGE ("ts");
CREATE TABLE "monitoring_rollup" (
    "series_id" bigint NOT NULL,
    "minute" timestamp with time zone NOT NULL,
    "count" integer NOT NULL CHECK ("count" >= 0),
    "total" double precision NOT NULL,
    "low" double precision NOT NULL,
    "high" double precision NOT NULL,
    PRIMARY KEY ("series_id", "minute")
) PARTITION BY RANGE ("minute");
"""
DROP_SQL = 'DROP TABLE IF EXISTS "monitoring_sample"; DROP TABLE IF EXISTS "monitoring_rollup";'
