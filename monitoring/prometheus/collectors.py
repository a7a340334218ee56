"""The control plane's own Prometheus metrics, read from the database at scrape time.

:class:`FleetCollector` takes one :class:`~monitoring.snapshot.FleetSnapshot` per
scrape and yields every family below, including the empty ones (so a family's HELP and TYPE
lines are always there and a dashboard or rule never points at a name that is not exported).
Metric names are listed in :data:`FAMILIES`; docs/monitoring.md documents them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from core.jobs import JobKind, JobState
from deployments.choices import DeploymentState, ReplicaState, RolloutState
from fleet.choices import NodeState
from monitoring import alerts
from monitoring import snapshot as snap
from monitoring.prometheus.durations import SharedHistogramCollector

FAMILIES: dict[str, str] = {
    "fleet_info": "The control plane's version (value 1).",
    "fleet_nodes": "Nodes by state (pending, ready, unreachable).",
    "fleet_node_state": "1 for each node's current state, 0 for the others.",
    "fleet_node_maintenance": "1 when an operator put the node in maintenance.",
    "fleet_node_cordoned": "1 when no new replicas are placed on the node.",
    "fleet_node_heartbeat_age_seconds": "Seconds since the node's last heartbeat was received.",
    "fleet_node_disk_total_bytes": "Size of the disk holding the agent's data dir (ready nodes).",
    "fleet_node_disk_free_bytes": "Free space on the disk holding the agent's data dir.",
    "fleet_node_gpu_memory_total_bytes": "Memory of each GPU (NVML), from the last heartbeat.",
    "fleet_node_gpu_memory_free_bytes": "Free memory of each GPU (NVML), from the last heartbeat.",
    "fleet_deployments": "Deployments by state (active, paused, stopped).",
    "fleet_deployment_replicas_desired": "Replicas a deployment asks for.",
    "fleet_deployment_replicas_available": "Replicas of a deployment that are available.",
    "fleet_replicas": "Replicas by deployment and state (gone replicas are not counted).",
    "fleet_replica_restarts": "Times the engine restarted a replica's container.",
    "fleet_replica_slot_replacements": (
        "Replicas created for one slot at one revision in the last 15 minutes, minus one "
        "(a slot that keeps being replaced is crash-looping)."
    ),
    "fleet_jobs": "Jobs by kind and state.",
    "fleet_rollouts": "Rollouts by outcome (running, succeeded, failed, paused, superseded).",
    "fleet_deployment_rollout_state": "1 for the state of each deployment's newest rollout.",
    "fleet_queue_depth": "Messages waiting on a Celery queue (control, node.<id>).",
    "fleet_broker_up": "1 when the Redis broker's queues could be read for this scrape, else 0.",
    "fleet_alert_threshold": "Alert thresholds configured on the control plane (see alerts).",
    "fleet_metrics_collect_seconds": "Time this scrape spent reading the fleet's state.",
}


def _gauge(name: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, FAMILIES[name], labels=list(labels))


class FleetCollector(Collector):
    """Nodes, replicas, deployments, jobs, rollouts and queues, from one snapshot."""

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        fleet = snap.take()
        alerts.track_pending(fleet)  # the console's "for 5 minutes" follows the scrapes too
        yield from self.families(fleet)
        took = _gauge("fleet_metrics_collect_seconds")
        took.add_metric([], time.perf_counter() - started)
        yield took

    def families(self, fleet: snap.FleetSnapshot) -> Iterator[Metric]:
        info = _gauge("fleet_info", ("version",))
        info.add_metric([settings.FLEET_VERSION], 1)
        yield info
        yield from self._nodes(fleet)
        yield from self._deployments(fleet)
        yield from self._jobs(fleet)
        yield from self._queues(fleet)
        thresholds = _gauge("fleet_alert_threshold", ("name",))
        for name, value in alerts.thresholds().items():
            thresholds.add_metric([name], value)
        yield thresholds

    def _nodes(self, fleet: snap.FleetSnapshot) -> Iterator[Metric]:
        counts = {state: 0 for state in NodeState.values}
        one_hot = _gauge("fleet_node_state", ("node", "state"))
        maintenance = _gauge("fleet_node_maintenance", ("node",))
        cordoned = _gauge("fleet_node_cordoned", ("node",))
        age = _gauge("fleet_node_heartbeat_age_seconds", ("node",))
        disk_total = _gauge("fleet_node_disk_total_bytes", ("node",))
        disk_free = _gauge("fleet_node_disk_free_bytes", ("node",))
        gpu_total = _gauge("fleet_node_gpu_memory_total_bytes", ("node", "gpu", "model"))
        gpu_free = _gauge("fleet_node_gpu_memory_free_bytes", ("node", "gpu", "model"))
        for node in fleet.nodes:
            counts[node.state] = counts.get(node.state, 0) + 1
            for state in NodeState.values:
                one_hot.add_metric([node.name, state], 1 if node.state == state else 0)
            maintenance.add_metric([node.name], 1 if node.maintenance else 0)
            cordoned.add_metric([node.name], 1 if node.cordoned else 0)
            heartbeat_age = snap.heartbeat_age(node, fleet.taken_at)
            if heartbeat_age is not None:
                age.add_metric([node.name], heartbeat_age)
            if not snap.reports_inventory(node):
                continue  # an unreachable node's last inventory is stale
            if node.disk_total_bytes and node.disk_free_bytes is not None:
                disk_total.add_metric([node.name], node.disk_total_bytes)
                disk_free.add_metric([node.name], node.disk_free_bytes)
            for position, gpu in enumerate(node.gpus):
                total = gpu.get("memory_total_bytes")
                free = gpu.get("memory_free_bytes")
                if not isinstance(total, int) or not isinstance(free, int) or total <= 0:
                    continue
                labels = [node.name, str(gpu.get("index", position)), str(gpu.get("name", ""))]
                gpu_total.add_metric(labels, total)
                gpu_free.add_metric(labels, free)
        nodes = _gauge("fleet_nodes", ("state",))
        for state, count in counts.items():
            nodes.add_metric([state], count)
        yield from (nodes, one_hot, maintenance, cordoned, age, disk_total, disk_free)
        yield from (gpu_total, gpu_free)

    def _deployments(self, fleet: snap.FleetSnapshot) -> Iterator[Metric]:
        by_state = {state: 0 for state in DeploymentState.values}
        desired = _gauge("fleet_deployment_replicas_desired", ("deployment",))
        available = _gauge("fleet_deployment_replicas_available", ("deployment",))
        for deployment in fleet.deployments:
            by_state[deployment["state"]] = by_state.get(deployment["state"], 0) + 1
            desired.add_metric([deployment["name"]], deployment["desired"])
            available.add_metric([deployment["name"]], deployment["available"])
        deployments = _gauge("fleet_deployments", ("state",))
        for state, count in by_state.items():
            deployments.add_metric([state], count)
        yield from (deployments, desired, available)

        replicas = _gauge("fleet_replicas", ("deployment", "state"))
        names = sorted({d["name"] for d in fleet.deployments})
        for name in names:
            for state in ReplicaState.values:
                if state != ReplicaState.GONE:
                    replicas.add_metric([name, state], fleet.replica_states.get((name, state), 0))
        yield replicas
        restarts = CounterMetricFamily(
            "fleet_replica_restarts",
            FAMILIES["fleet_replica_restarts"],
            labels=["deployment", "replica", "slot", "node"],
        )
        for replica in fleet.replicas:
            if replica.state in (ReplicaState.FAILED, ReplicaState.STOPPING):
                continue
            restarts.add_metric(
                [replica.deployment, str(replica.id), str(replica.slot), replica.node],
                replica.restarts,
            )
        yield restarts
        churn = _gauge("fleet_replica_slot_replacements", ("deployment", "slot", "revision"))
        for slot in fleet.churn:
            churn.add_metric(
                [slot.deployment, str(slot.slot), str(slot.revision)], slot.replacements
            )
        yield churn

        outcomes = _gauge("fleet_rollouts", ("state",))
        for state in RolloutState.values:
            outcomes.add_metric([state], fleet.rollout_outcomes.get(state, 0))
        yield outcomes
        latest = _gauge("fleet_deployment_rollout_state", ("deployment", "rollout", "state"))
        for rollout in fleet.latest_rollouts:
            for state in RolloutState.values:
                latest.add_metric(
                    [rollout.deployment, str(rollout.id), state], 1 if rollout.state == state else 0
                )
        yield latest

    def _jobs(self, fleet: snap.FleetSnapshot) -> Iterator[Metric]:
        jobs = _gauge("fleet_jobs", ("kind", "state"))
        kinds = sorted(set(JobKind.values) | {kind for kind, _ in fleet.jobs})
        for kind in kinds:
            for state in JobState.values:
                jobs.add_metric([kind, state], fleet.jobs.get((kind, state), 0))
        yield jobs

    def _queues(self, fleet: snap.FleetSnapshot) -> Iterator[Metric]:
        depth = _gauge("fleet_queue_depth", ("queue",))
        for queue, messages in sorted(fleet.queue_depths.items()):
            depth.add_metric([queue], messages)
        yield depth
        up = _gauge("fleet_broker_up")
        if snap.broker_readable():  # the embedded file-system broker has no depths to read
            up.add_metric([], 0 if fleet.queue_error else 1)
        yield up


FLEET_REGISTRY = CollectorRegistry(auto_describe=False)
FLEET_REGISTRY.register(FleetCollector())
FLEET_REGISTRY.register(SharedHistogramCollector())


def exported_names(registry: Any = FLEET_REGISTRY) -> set[str]:
    """Family names a registry exports (for tests and docs)."""
    return {metric.name for metric in registry.collect()}
