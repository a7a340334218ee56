"""The autoscaler's signals from stored metrics (registered in deployments.traffic).

Per autoscaled deployment, the newest sample (at most FRESH_S old) of each routable
replica's series, summed: ``queue`` reads ``requests_waiting``, ``tokens_per_second``
``generated_tokens_per_s``, ``cpu`` ``cpu_percent`` (Docker's figure, 100 = one core);
``gpu`` the mean utilisation of each replica's GPUs (node series, by GPU index). A
deployment none of whose replicas reported recently gives no reading (its count is held).
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from deployments import traffic
from deployments.autoscaling import Metric
from deployments.choices import ReplicaState
from deployments.models import Replica
from monitoring.choices import NodeMetric, ReplicaMetric, Scope
from monitoring.models import Sample, Series

FRESH_S = 30
ROUTABLE = (ReplicaState.HEALTHY, ReplicaState.AVAILABLE)
REPLICA_SERIES = {
    Metric.QUEUE: ReplicaMetric.REQUESTS_WAITING,
    Metric.TOKENS: ReplicaMetric.GENERATED_TOKENS_PER_S,
    Metric.CPU: ReplicaMetric.CPU_PERCENT,
}


def _newest(series_ids: list[int]) -> dict[int, float]:
    since = timezone.now() - timedelta(seconds=FRESH_S)
    newest: dict[int, tuple[object, float]] = {}
    for series_id, ts, value in Sample.objects.filter(
        series_id__in=series_ids, ts__gte=since
    ).values_list("series_id", "ts", "value"):
        if series_id not in newest or ts > newest[series_id][0]:  # type: ignore[operator]
            newest[series_id] = (ts, value)
    return {series_id: value for series_id, (_, value) in newest.items()}


def replica_reader(metric: str) -> traffic.SignalReader:
    name = REPLICA_SERIES[metric]

    def read(deployment_ids: list[int]) -> dict[int, traffic.Reading]:
        replicas = dict(
            Replica.objects.filter(
                deployment_id__in=deployment_ids, state__in=ROUTABLE
            ).values_list("pk", "deployment_id")
        )
        series = dict(
            Series.objects.filter(
                scope=Scope.REPLICA, name=name, replica_id__in=list(replicas)
            ).values_list("pk", "replica_id")
        )
        values = _newest(list(series))
        totals: dict[int, float] = {}
        for series_id, value in values.items():
            deployment_id = replicas[series[series_id]]
            totals[deployment_id] = totals.get(deployment_id, 0.0) + value
        return {pk: traffic.Reading(value) for pk, value in totals.items()}

    return read


def gpu(deployment_ids: list[int]) -> dict[int, traffic.Reading]:
    replicas = list(
        Replica.objects.filter(
            deployment_id__in=deployment_ids, state__in=ROUTABLE, node__isnull=False
        ).values_list("deployment_id", "node_id", "gpu_indices")
    )
    wanted = {(node, str(index)) for _, node, indices in replicas for index in indices or []}
    series = {
        (node, device): pk
        for pk, node, device in Series.objects.filter(
            scope=Scope.NODE,
            name=NodeMetric.GPU_UTILIZATION_PERCENT,
            node_id__in={node for node, _ in wanted},
        ).values_list("pk", "node_id", "device")
        if (node, device) in wanted
    }
    values = _newest(list(series.values()))
    totals: dict[int, float] = {}
    for deployment_id, node, indices in replicas:
        found = [
            values[series[(node, str(i))]]
            for i in indices or []
            if series.get((node, str(i))) in values
        ]
        if found:
            totals[deployment_id] = totals.get(deployment_id, 0.0) + sum(found) / len(found)
    return {pk: traffic.Reading(value) for pk, value in totals.items()}


def connect() -> None:
    for metric in REPLICA_SERIES:
        traffic.register_signal(metric, replica_reader(metric))
    traffic.register_signal(Metric.GPU, gpu)
