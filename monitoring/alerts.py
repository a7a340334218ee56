"""Alert rules: one definition for Prometheus and for the console.

Each :class:`Rule` holds the PromQL a Prometheus server evaluates (rendered into
``docker/prometheus/rules/fleet.yml`` by :func:`render_rules`; a test keeps the shipped file
equal to it) and a Python check over the same :class:`~monitoring.snapshot.FleetSnapshot` the
``/metrics`` exposition is built from, with the same thresholds (settings exported as
``fleet_alert_threshold``). The console lists :func:`active_alerts`.

A rule with a hold time (Prometheus ``for:``) is *pending* until its condition has held that
long. Where the database knows since when a condition holds (a node's state change, a
rollout's end) the console uses that moment; otherwise (queue depth) the first evaluation
that saw it, kept in Redis by :func:`track_pending` (run at every scrape and console view).

Regenerate the rules file after changing a rule::

    .venv/bin/python manage.py shell -v 0 -c "from monitoring.alerts import render_rules; \
        print(render_rules(), end='')" > docker/prometheus/rules/fleet.yml
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from django.conf import settings
from django.urls import reverse

from core.redis_client import redis_client
from deployments.choices import RolloutState
from fleet.choices import NodeState
from monitoring import snapshot as snap

log = logging.getLogger(__name__)

PENDING_KEY = "fleet:alerts:pending:"
RULES_FILE = "docker/prometheus/rules/fleet.yml"


@dataclass(frozen=True)
class Finding:
    """One instance of a rule's condition, as the console sees it."""

    labels: dict[str, str]
    since: datetime | None  # when the condition started, if known
    link: str
    link_text: str
    detail: str = ""


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str  # critical | warning
    expr: str
    summary: str  # may use {{ $labels.<name> }}
    description: str
    check: Callable[[snap.FleetSnapshot, dict[str, float]], list[Finding]] | None
    hold: timedelta = timedelta(0)  # Prometheus ``for:``

    @property
    def console(self) -> bool:
        """Whether the console evaluates it (a rule about the control plane itself cannot)."""
        return self.check is not None


@dataclass
class ActiveAlert:
    rule: str
    severity: str
    state: str  # pending | firing
    labels: dict[str, str]
    summary: str
    detail: str
    since: datetime | None
    link: str
    link_text: str
    hold_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "state": self.state,
            "labels": self.labels,
            "summary": self.summary,
            "detail": self.detail,
            "since": self.since.isoformat() if self.since else None,
            "link": self.link,
            "hold_seconds": self.hold_seconds,
        }


# --- The conditions, evaluated in Python -----------------------------------------------------
def _node_link(node_id: int, name: str) -> tuple[str, str]:
    return reverse("nodes-detail", args=[node_id]), f"node {name}"


def _deployment_link(deployment_id: int, name: str) -> tuple[str, str]:
    return reverse("deployments-detail", args=[deployment_id]), f"deployment {name}"


def _unreachable(fleet: snap.FleetSnapshot, _: dict[str, float]) -> list[Finding]:
    return [
        Finding(
            {"node": node.name},
            node.state_changed_at,
            *_node_link(node.id, node.name),
            detail=f"last heartbeat {_ago(node.last_heartbeat_at, fleet.taken_at)}",
        )
        for node in fleet.nodes
        if node.state == NodeState.UNREACHABLE and not node.maintenance
    ]


def _crash_looping(fleet: snap.FleetSnapshot, limits: dict[str, float]) -> list[Finding]:
    return [
        Finding(
            {"deployment": slot.deployment, "slot": str(slot.slot), "revision": str(slot.revision)},
            None,
            *_deployment_link(slot.deployment_id, slot.deployment),
            detail=f"slot {slot.slot} replaced {slot.replacements} times in 15 minutes",
        )
        for slot in fleet.churn
        if slot.replacements >= limits["slot_replacements"]
    ]


def _rollouts_in(state: str) -> Callable[[snap.FleetSnapshot, dict[str, float]], list[Finding]]:
    def check(fleet: snap.FleetSnapshot, _: dict[str, float]) -> list[Finding]:
        return [
            Finding(
                {"deployment": rollout.deployment, "rollout": str(rollout.id)},
                rollout.finished_at,
                *_deployment_link(rollout.deployment_id, rollout.deployment),
                detail=(
                    f"{'rollback' if rollout.is_rollback else 'rollout'} to revision "
                    f"{rollout.to_revision}: {rollout.failure_reason or state}"
                ),
            )
            for rollout in fleet.latest_rollouts
            if rollout.state == state
        ]

    return check


def _queue_depth(fleet: snap.FleetSnapshot, limits: dict[str, float]) -> list[Finding]:
    nodes = {fleet.node_queue(node): node for node in fleet.nodes}
    found = []
    for queue, depth in sorted(fleet.queue_depths.items()):
        if depth <= limits["queue_depth"]:
            continue
        node = nodes.get(queue)
        link, text = _node_link(node.id, node.name) if node else (reverse("jobs"), "jobs")
        found.append(Finding({"queue": queue}, None, link, text, detail=f"{depth} messages"))
    return found


def _broker(fleet: snap.FleetSnapshot, _: dict[str, float]) -> list[Finding]:
    if not fleet.queue_error:
        return []
    return [Finding({}, None, reverse("jobs"), "jobs", detail=fleet.queue_error)]


def _disk(fleet: snap.FleetSnapshot, limits: dict[str, float]) -> list[Finding]:
    found = []
    for node in fleet.nodes:
        if not snap.reports_inventory(node) or not node.disk_total_bytes:
            continue
        if node.disk_free_bytes is None:
            continue
        free = 100.0 * node.disk_free_bytes / node.disk_total_bytes
        if free < limits["disk_free_min_percent"]:
            found.append(
                Finding(
                    {"node": node.name},
                    None,
                    *_node_link(node.id, node.name),
                    detail=f"{free:.1f} % free",
                )
            )
    return found


def _gpu_memory(fleet: snap.FleetSnapshot, limits: dict[str, float]) -> list[Finding]:
    found = []
    for node in fleet.nodes:
        if not snap.reports_inventory(node):
            continue
        for position, gpu in enumerate(node.gpus):
            total, free = gpu.get("memory_total_bytes"), gpu.get("memory_free_bytes")
            if not isinstance(total, int) or not isinstance(free, int) or total <= 0:
                continue
            used = 100.0 * (1 - free / total)
            if used > limits["gpu_memory_max_percent"]:
                labels = {
                    "node": node.name,
                    "gpu": str(gpu.get("index", position)),
                    "model": str(gpu.get("name", "")),
                }
                found.append(
                    Finding(labels, None, *_node_link(node.id, node.name), f"{used:.1f} % used")
                )
    return found


def _threshold(name: str) -> str:
    return f'on() group_left() max(fleet_alert_threshold{{name="{name}"}})'


RULES: tuple[Rule, ...] = (
    Rule(
        "FleetNodeUnreachable",
        "critical",
        'fleet_node_state{state="unreachable"} == 1 unless on(node) fleet_node_maintenance == 1',
        "Node {{ $labels.node }} is unreachable",
        "No heartbeat within the grace period. Check the agent process and the host's network; "
        "its replicas are rescheduled after FLEET_RESCHEDULE_GRACE_SECONDS.",
        _unreachable,
    ),
    Rule(
        "FleetReplicaCrashLooping",
        "warning",
        f"fleet_replica_slot_replacements >= {_threshold('slot_replacements')}",
        "Deployment {{ $labels.deployment }} slot {{ $labels.slot }} is crash-looping",
        "The slot's replica keeps failing and being replaced at the same revision. Read the "
        "replica's logs on the deployment page; roll back if the revision is bad.",
        _crash_looping,
    ),
    Rule(
        "FleetRolloutFailed",
        "critical",
        'fleet_deployment_rollout_state{state="failed"} == 1',
        "Rollout of {{ $labels.deployment }} failed",
        "The newest rollout failed its health gate or deadline. See the deployment's "
        "rollouts; fix the revision or roll back.",
        _rollouts_in(RolloutState.FAILED),
    ),
    Rule(
        "FleetRolloutPaused",
        "warning",
        'fleet_deployment_rollout_state{state="paused"} == 1',
        "Rollout of {{ $labels.deployment }} is paused",
        "The newest rollout is paused (by an operator, or a failed rollback waiting for a "
        "human). Resume it or roll back from the deployment page.",
        _rollouts_in(RolloutState.PAUSED),
    ),
    Rule(
        "FleetQueueDepthHigh",
        "warning",
        f"fleet_queue_depth > {_threshold('queue_depth')}",
        "Queue {{ $labels.queue }} has a backlog",
        "More messages than FLEET_ALERT_QUEUE_DEPTH have waited for 5 minutes: its worker or "
        "agent is down or too slow. Check the worker (control) or the node's agent.",
        _queue_depth,
        hold=timedelta(minutes=5),
    ),
    Rule(
        "FleetBrokerUnreadable",
        "warning",
        "fleet_broker_up == 0",
        "The control plane cannot read the broker's queues",
        "Queue depths are unknown. Check REDIS_URL and that Redis answers.",
        _broker,
        hold=timedelta(minutes=5),
    ),
    Rule(
        "FleetNodeDiskNearlyFull",
        "warning",
        "100 * fleet_node_disk_free_bytes / fleet_node_disk_total_bytes < "
        + _threshold("disk_free_min_percent"),
        "Disk of node {{ $labels.node }} is nearly full",
        "Less free space than FLEET_NODE_DISK_FREE_MIN_PERCENT on the agent's data disk; "
        "downloads will fail. Delete unused model variants from the node.",
        _disk,
    ),
    Rule(
        "FleetGpuMemoryNearlyFull",
        "warning",
        "100 * (1 - fleet_node_gpu_memory_free_bytes / fleet_node_gpu_memory_total_bytes) > "
        + _threshold("gpu_memory_max_percent"),
        "GPU {{ $labels.gpu }} of node {{ $labels.node }} is nearly full",
        "GPU memory use is above FLEET_ALERT_GPU_MEMORY_PERCENT; new replicas will not fit "
        "and running ones may fail to allocate. Move a deployment or lower its context.",
        _gpu_memory,
    ),
    Rule(
        "FleetControlPlaneDown",
        "critical",
        'up{job="slm-fleet"} == 0',
        "Prometheus cannot scrape the control plane",
        "The web process does not answer /api/v1/prometheus/metrics/ (or refuses the scrape "
        "token). The console cannot show this alert: it is the thing that is down.",
        None,
        hold=timedelta(minutes=2),
    ),
)


# --- The console's view ----------------------------------------------------------------------
def thresholds() -> dict[str, float]:
    """Thresholds the alert rules compare against, from settings (one place for both: the
    exposition exports them as ``fleet_alert_threshold``)."""
    return {
        "queue_depth": float(settings.FLEET_ALERT_QUEUE_DEPTH),
        "disk_free_min_percent": float(settings.FLEET_NODE_DISK_FREE_MIN_PERCENT),
        "gpu_memory_max_percent": float(settings.FLEET_ALERT_GPU_MEMORY_PERCENT),
        "slot_replacements": float(settings.FLEET_ALERT_CRASHLOOP_REPLACEMENTS),
    }


def active_alerts(fleet: snap.FleetSnapshot | None = None) -> list[ActiveAlert]:
    """Every console rule's current findings, firing first, most severe first."""
    fleet = fleet or snap.take()
    limits = thresholds()
    pending_since = track_pending(fleet, limits)
    alerts: list[ActiveAlert] = []
    for rule in RULES:
        if rule.check is None:
            continue
        for finding in rule.check(fleet, limits):
            since = finding.since or pending_since.get((rule.name, _labelkey(finding.labels)))
            held = (fleet.taken_at - since) if since else timedelta(0)
            firing = rule.hold <= timedelta(0) or (since is not None and held >= rule.hold)
            alerts.append(
                ActiveAlert(
                    rule=rule.name,
                    severity=rule.severity,
                    state="firing" if firing else "pending",
                    labels=finding.labels,
                    summary=render(rule.summary, finding.labels),
                    detail=finding.detail,
                    since=since,
                    link=finding.link,
                    link_text=finding.link_text,
                    hold_seconds=rule.hold.total_seconds(),
                )
            )
    alerts.sort(key=lambda a: (a.state != "firing", a.severity != "critical", a.rule, a.summary))
    return alerts


def track_pending(
    fleet: snap.FleetSnapshot, limits: dict[str, float] | None = None
) -> dict[tuple[str, str], datetime]:
    """For rules with a hold time and no moment in the database: since when each finding
    has been seen (kept in Redis; a finding no longer true is forgotten)."""
    limits = limits or thresholds()
    found: dict[tuple[str, str], datetime] = {}
    if not getattr(settings, "REDIS_URL", ""):
        return found
    try:
        client = redis_client()
        for rule in RULES:
            if rule.check is None or rule.hold <= timedelta(0):
                continue
            key = PENDING_KEY + rule.name
            current = {_labelkey(f.labels) for f in rule.check(fleet, limits) if f.since is None}
            now = fleet.taken_at.timestamp()
            with client.pipeline(transaction=False) as pipe:
                for labelkey in current:
                    pipe.hsetnx(key, labelkey, repr(now))
                pipe.hgetall(key)
                stored = pipe.execute()[-1]
            stale = [k for k in stored if k.decode() not in current]
            if stale:
                client.hdel(key, *stale)
            for raw_key, raw_value in stored.items():
                if raw_key.decode() in current:
                    moment = datetime.fromtimestamp(float(raw_value.decode()), tz=UTC)
                    found[(rule.name, raw_key.decode())] = moment
    except Exception as exc:  # Redis down: holds are judged from now on
        log.warning("tracking pending alerts in Redis failed: %s", exc)
    return found


def _labelkey(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True)


_LABEL = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")


def render(template: str, labels: dict[str, str]) -> str:
    """A rule's summary with ``{{ $labels.x }}`` filled in, as Prometheus does."""
    return _LABEL.sub(lambda m: labels.get(m[1], ""), template)


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    return f"{int((now - moment).total_seconds())} s ago"


# --- The rules file ----------------------------------------------------------------------------
def _duration(hold: timedelta) -> str:
    seconds = int(hold.total_seconds())
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def render_rules() -> str:
    """docker/prometheus/rules/fleet.yml as this module defines it."""
    rules = []
    for rule in RULES:
        entry: dict[str, Any] = {"alert": rule.name, "expr": rule.expr}
        if rule.hold > timedelta(0):
            entry["for"] = _duration(rule.hold)
        entry["labels"] = {"severity": rule.severity}
        entry["annotations"] = {"summary": rule.summary, "description": rule.description}
        rules.append(entry)
    header = (
        "# Generated from monitoring/alerts.py (the console evaluates the same conditions).\n"
        '# Regenerate: .venv/bin/python manage.py shell -v 0 -c "from monitoring.alerts import '
        "render_rules; print(render_rules(), end='')\" > " + RULES_FILE + "\n"
    )
    body = yaml.safe_dump(
        {"groups": [{"name": "slm-fleet", "rules": rules}]},
        sort_keys=False,
        width=100,
        allow_unicode=True,
    )
    return header + body
