"""What the target's replicas used during a level, from the monitoring samples.

Agents sample each replica's container (CPU %, memory) and their node's GPUs every few
seconds; a level shorter than that interval may have no sample, which the figures say
(``samples: 0``) rather than showing a zero.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Avg, Count, Max

from benchmarks.models import BenchmarkRun
from deployments.choices import ReplicaState
from deployments.models import Replica
from monitoring.choices import NodeMetric, ReplicaMetric
from monitoring.models import Sample, Series

# a sample taken just after the level still describes it
SLACK = timedelta(seconds=2)


def _replica_ids(run: BenchmarkRun, target: dict[str, Any]) -> list[int]:
    if target.get("replica"):
        return [int(target["replica"])]
    if run.deployment_id is None:
        return []
    return list(
        Replica.objects.filter(
            deployment_id=run.deployment_id, state=ReplicaState.AVAILABLE
        ).values_list("pk", flat=True)
    )


def _figures(series_ids: list[int], since: datetime, until: datetime) -> dict[str, Any]:
    row = Sample.objects.filter(series_id__in=series_ids, ts__gte=since, ts__lte=until).aggregate(
        mean=Avg("value"), peak=Max("value"), samples=Count("value")
    )
    return {
        "mean": round(row["mean"], 2) if row["mean"] is not None else None,
        "max": round(row["peak"], 2) if row["peak"] is not None else None,
        "samples": row["samples"],
    }


def during(
    run: BenchmarkRun, target: dict[str, Any], since: datetime, until: datetime
) -> dict[str, Any]:
    ids = _replica_ids(run, target)
    until = until + SLACK
    out: dict[str, Any] = {"replicas": []}
    node_ids: set[int] = set()
    for replica_id in ids:
        entry: dict[str, Any] = {"replica": replica_id}
        for name, key in (
            (ReplicaMetric.CPU_PERCENT, "cpu_percent"),
            (ReplicaMetric.MEMORY_BYTES, "memory_bytes"),
        ):
            series = list(
                Series.objects.filter(replica_id=replica_id, name=name).values_list("pk", "node_id")
            )
            node_ids.update(n for _, n in series)
            entry[key] = _figures([s for s, _ in series], since, until)
        out["replicas"].append(entry)
    for gpu_metric in (NodeMetric.GPU_UTILIZATION_PERCENT, NodeMetric.GPU_MEMORY_USED_BYTES):
        key = str(gpu_metric.value)
        series_ids = list(
            Series.objects.filter(node_id__in=node_ids, replica_id=0, name=gpu_metric).values_list(
                "pk", flat=True
            )
        )
        if series_ids:
            out[key] = _figures(series_ids, since, until)
    return out
