"""Chart series for pages and the REST snapshot: raw samples for short windows, rollups after.

A chart of one series over 15 minutes reads ~180 rows through the primary key
``(series_id, ts)`` of one or two hourly partitions, however much is stored in total
(tests/monitoring/test_storage.py checks the plan; bench/live_metrics.py times it).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Q

from monitoring.live import FLEET_NAMES
from monitoring.models import Rollup, Sample, Series

RAW_WINDOW_MAX = timedelta(hours=6)  # longer windows read the 1-minute rollups
MAX_SERIES = 2000


@dataclass(frozen=True)
class Selection:
    """Which series: one deployment's, one node's, or the fleet overview's."""

    deployment_id: int | None = None
    node_id: int | None = None
    fleet: bool = False
    names: tuple[str, ...] = ()

    @property
    def group(self) -> str:
        if self.deployment_id is not None:
            return f"deployment.{self.deployment_id}"
        if self.node_id is not None:
            return f"node.{self.node_id}"
        return "fleet"

    def series(self) -> list[Series]:
        query = Q()
        if self.deployment_id is not None:
            query &= Q(deployment_id=self.deployment_id)
        elif self.node_id is not None:
            query &= Q(node_id=self.node_id)
        else:
            query &= Q(name__in=FLEET_NAMES)
        if self.names:
            query &= Q(name__in=self.names)
        return list(Series.objects.filter(query).order_by("id")[:MAX_SERIES])


def snapshot(
    selection: Selection, *, since: datetime, until: datetime | None = None
) -> dict[str, Any]:
    """Every selected series with its points since ``since`` (epoch ms, value)."""
    until = until or datetime.now(UTC)
    series = selection.series()
    ids = [s.pk for s in series]
    points: dict[int, list[list[float]]] = defaultdict(list)
    raw = until - since <= RAW_WINDOW_MAX
    if ids and raw:
        rows = (
            Sample.objects.filter(series_id__in=ids, ts__gte=since, ts__lte=until)
            .order_by("series_id", "ts")
            .values_list("series_id", "ts", "value")
        )
        for series_id, ts, value in rows.iterator(chunk_size=5000):
            points[series_id].append([int(ts.timestamp() * 1000), value])
    elif ids:
        rollups = (
            Rollup.objects.filter(series_id__in=ids, minute__gte=since, minute__lte=until)
            .order_by("series_id", "minute")
            .values_list("series_id", "minute", "total", "count")
        )
        for series_id, minute, total, count in rollups.iterator(chunk_size=5000):
            points[series_id].append([int(minute.timestamp() * 1000), total / count])
    return {
        "group": selection.group,
        "source": "raw" if raw else "rollup",
        "since_ms": int(since.timestamp() * 1000),
        "until_ms": int(until.timestamp() * 1000),
        "series": [
            {
                "id": s.pk,
                "name": s.name,
                "device": s.device,
                "node": s.node_id,
                "deployment": s.deployment_id,
                "replica": s.replica_id,
                "points": points.get(s.pk, []),
            }
            for s in series
        ],
    }
