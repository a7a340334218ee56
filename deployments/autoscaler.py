"""The autoscaler: every FLEET_AUTOSCALE_MS (beat), each autoscaled deployment's signal is
read, its windows updated and its desired replica count set; the reconciler does the rest.

How a count is decided (:func:`decide`, after Knative's KPA and Kubernetes HPA):

1. Each tick adds the deployment's signal (summed over its replicas) to its window.
   ``stable`` is the mean over ``stable_window_seconds``, ``panic`` over
   ``panic_window_seconds``; the wanted count is ``ceil(value / target)``.
2. Panic: when ``panic / target`` is at least ``panic_threshold`` times the ready replicas,
   the panic window decides and the count never goes down, until the signal has stayed
   under the threshold for a whole stable window.
3. Up by at most ``max_scale_up_rate`` × ready per step; down to no less than
   ``current / max_scale_down_rate`` per step, and only to the highest count wanted over
   ``scale_down_stabilization_seconds`` (no flapping).
4. Bounds: ``[min_replicas, max_replicas]``; with ``min_replicas`` 0 it goes to zero only
   after ``idle_seconds`` without any request, and a request at zero wakes it at once
   (the gateway holds the caller meanwhile: gateway/activator.py).

No signal (no gateway publishing, monitoring silent): the count is held. Each change is
one "scaled" history event with actor ``autoscaler`` and the figures that drove it. The
window state lives in Redis (the process's cache without it), so any worker can run the
next tick.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections

from core.history import ChangeContext, record
from core.redis_client import redis_client
from deployments import services, traffic
from deployments.autoscaling import Metric, Policy, is_autoscaled, policy_of
from deployments.choices import DeploymentState, ReplicaState
from deployments.models import Deployment, Replica

log = logging.getLogger(__name__)

STATE_TTL_S = 3600
CHART_SECONDS = 900  # the deployment page's chart: the last 15 minutes
TICK_LOCK = "slm-fleet:autoscaler:tick"
ROUTABLE = (ReplicaState.HEALTHY, ReplicaState.AVAILABLE)


@dataclass
class State:
    """What the autoscaler remembers of one deployment between ticks (in the cache)."""

    samples: list[list[float]] = field(default_factory=list)  # [t, value]
    wanted: list[list[float]] = field(default_factory=list)  # [t, count] (scale-down window)
    panic_until: float = 0.0
    last_active: float = 0.0
    blocked: str = ""
    chart: list[list[float | None]] = field(default_factory=list)  # [t, desired, ready, value]
    last: dict[str, Any] = field(default_factory=dict)  # the latest decision, for the page

    @classmethod
    def load(cls, deployment: Deployment) -> State:
        if settings.REDIS_URL:
            text = redis_client().get(_key(deployment))
            raw = json.loads(text) if text else None
        else:
            raw = cache.get(_key(deployment))
        if not isinstance(raw, dict):
            return cls()
        try:
            return cls(**raw)
        except TypeError:
            return cls()

    def save(self, deployment: Deployment) -> None:
        if settings.REDIS_URL:
            redis_client().set(_key(deployment), json.dumps(asdict(self)), ex=STATE_TTL_S)
        else:
            cache.set(_key(deployment), asdict(self), STATE_TTL_S)


def _key(deployment: Deployment) -> str:
    """Per deployment row (its creation time too: a new database may reuse an id)."""
    return f"slm-fleet:autoscaler:{deployment.pk}:{deployment.created_at.timestamp():.6f}"


def _lock() -> bool:
    """One tick at a time across workers (a slow one must not pile up)."""
    if settings.REDIS_URL:
        return bool(redis_client().set(TICK_LOCK, "1", nx=True, ex=10))
    return bool(cache.add(TICK_LOCK, 1, timeout=10))


def _unlock() -> None:
    if settings.REDIS_URL:
        redis_client().delete(TICK_LOCK)
    else:
        cache.delete(TICK_LOCK)


@dataclass(frozen=True)
class Decision:
    desired: int
    mode: str  # stable | panic | idle | wake | hold
    stable: float | None
    panic: float | None
    reason: str


def _mean(samples: list[list[float]], since: float) -> float | None:
    values = [v for t, v in samples if t > since]
    return sum(values) / len(values) if values else None


def _wanted(value: float, target: float) -> int:
    return max(0, math.ceil(value / target - 1e-9))


def decide(policy: Policy, state: State, now: float, current: int, ready: int) -> Decision:
    """The desired count now (``state``'s samples already hold this tick's; its panic and
    scale-down windows are updated here)."""
    target = policy.target
    stable = _mean(state.samples, now - policy.stable_window_seconds)
    panic = _mean(state.samples, now - policy.panic_window_seconds)
    idle_for = now - state.last_active if state.last_active else math.inf
    if stable is None:
        return Decision(current, "hold", None, None, "no signal: count held")
    panic = stable if panic is None else panic
    unit = Metric.UNITS.get(policy.metric, policy.metric)
    if current == 0:
        if idle_for < policy.panic_window_seconds or panic > 0:
            wake = max(1, min(_wanted(panic, target), policy.max_replicas))
            return Decision(
                policy.clamp(wake), "wake", stable, panic, "requests arrived while at zero"
            )
        return Decision(policy.clamp(0), "idle", stable, panic, "idle")
    basis = max(ready, 1)
    if panic / target >= policy.panic_threshold * basis:
        state.panic_until = now + policy.stable_window_seconds
    if now < state.panic_until:
        mode = "panic"
        desired = max(current, _wanted(panic, target))
        why = (
            f"panic: {panic:.2f} {unit} over {policy.panic_window_seconds} s, "
            f"≥ {policy.panic_threshold:g}× the target of {target:g} per replica"
        )
    else:
        mode = "stable"
        desired = _wanted(stable, target)
        why = f"{stable:.2f} {unit} over {policy.stable_window_seconds} s, target {target:g}"
    if desired > current:
        desired = min(desired, math.ceil(basis * policy.max_scale_up_rate))
    state.wanted = [w for w in state.wanted if w[0] > now - policy.scale_down_stabilization_seconds]
    state.wanted.append([now, float(desired)])
    if desired < current:
        desired = min(current, int(max(w[1] for w in state.wanted)))
        desired = max(desired, math.floor(current / policy.max_scale_down_rate))
    floor = policy.min_replicas
    if floor == 0 and idle_for < policy.idle_seconds:
        floor = 1
    if policy.min_replicas == 0 and idle_for >= policy.idle_seconds:
        return Decision(0, "idle", stable, panic, f"no request for {policy.idle_seconds} s")
    return Decision(max(floor, min(policy.max_replicas, desired)), mode, stable, panic, why)


# --- The tick -----------------------------------------------------------------------------
def tick(now: float | None = None) -> int:
    """One look at every autoscaled deployment; returns the number of counts changed."""
    if not _lock():
        return 0  # another tick is running
    try:
        return _tick(time.time() if now is None else now)
    finally:
        _unlock()


def _tick(now: float) -> int:
    deployments = [
        d
        for d in Deployment.objects.filter(
            state=DeploymentState.ACTIVE, deletion_requested_at__isnull=True
        ).select_related("current_revision")
        if is_autoscaled(d.spec)
    ]
    if not deployments:
        return 0
    ids = [d.pk for d in deployments]
    ready = _count(ids, ROUTABLE)
    pending = _pending_reasons(ids)
    by_metric: dict[str, list[int]] = {}
    policies = {d.pk: policy_of(d.spec) for d in deployments}
    for deployment in deployments:
        by_metric.setdefault(policies[deployment.pk].metric, []).append(deployment.pk)
    readings: dict[int, traffic.Reading] = {}
    for metric, members in by_metric.items():
        readings.update(traffic.read_signal(metric, members))
    activity = traffic.read_signal(Metric.CONCURRENCY, ids)
    changed = 0
    for deployment in deployments:
        changed += _one(
            deployment,
            policies[deployment.pk],
            readings.get(deployment.pk),
            activity.get(deployment.pk),
            ready.get(deployment.pk, 0),
            pending.get(deployment.pk, ""),
            now,
        )
    return changed


def _one(
    deployment: Deployment,
    policy: Policy,
    reading: traffic.Reading | None,
    activity: traffic.Reading | None,
    ready: int,
    blocked: str,
    now: float,
) -> int:
    state = State.load(deployment)
    keep = max(policy.stable_window_seconds, policy.panic_window_seconds)
    state.samples = [s for s in state.samples if s[0] > now - keep]
    if reading is not None and reading.value is not None:
        state.samples.append([now, float(reading.value)])
    if (activity and (activity.active or activity.held)) or (reading and reading.active):
        state.last_active = now
    elif not state.last_active:
        state.last_active = now  # a fresh policy starts its idle clock now
    current = deployment.desired_replicas
    decision = decide(policy, state, now, current, ready)
    state.last = {
        "at": now,
        "mode": decision.mode,
        "stable": decision.stable,
        "panic": decision.panic,
        "target": policy.target,
        "desired": decision.desired,
        "ready": ready,
        "reason": decision.reason,
        "blocked": blocked,
    }
    value = decision.panic if decision.mode == "panic" else decision.stable
    state.chart = [c for c in state.chart if (c[0] or 0) > now - CHART_SECONDS]
    state.chart.append([round(now, 1), decision.desired, ready, value])
    changed = 0
    if decision.desired != current:
        figures = {
            "metric": policy.metric,
            "target": policy.target,
            "mode": decision.mode,
            "stable": None if decision.stable is None else round(decision.stable, 3),
            "panic": None if decision.panic is None else round(decision.panic, 3),
            "ready": ready,
        }
        if services.autoscale(
            deployment.pk,
            decision.desired,
            reason=decision.reason,
            figures=figures,
            from_replicas=current,
        ):
            changed = 1
    if blocked != state.blocked:
        if blocked:
            record(
                ChangeContext.system(services.AUTOSCALER, reason=blocked),
                "autoscale_blocked",
                deployment,
                changes={"pending": {"before": None, "after": blocked}},
            )
        state.blocked = blocked
    state.save(deployment)
    return changed


def _count(ids: list[int], states: tuple[str, ...]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for deployment_id in Replica.objects.filter(
        deployment_id__in=ids, state__in=states
    ).values_list("deployment_id", flat=True):
        counts[deployment_id] = counts.get(deployment_id, 0) + 1
    return counts


def _pending_reasons(ids: list[int]) -> dict[int, str]:
    """Why replicas wait for a node (placement's reason), per deployment."""
    reasons: dict[int, str] = {}
    for deployment_id, reason in (
        Replica.objects.filter(deployment_id__in=ids, state=ReplicaState.PENDING, node__isnull=True)
        .exclude(reason="")
        .values_list("deployment_id", "reason")
    ):
        reasons.setdefault(deployment_id, reason)
    return reasons


# --- Waking from zero (the gateway's activator) ---------------------------------------------
def wake(name: str, held: int) -> bool:
    """A request arrived for ``name`` at zero replicas: ask for one at once."""
    close_old_connections()
    try:
        deployment = (
            Deployment.objects.filter(name=name, deletion_requested_at__isnull=True)
            .select_related("current_revision")
            .first()
        )
        if (
            deployment is None
            or deployment.state != DeploymentState.ACTIVE
            or deployment.desired_replicas > 0
            or not is_autoscaled(deployment.spec)
        ):
            return False
        state = State.load(deployment)
        state.last_active = time.time()
        state.save(deployment)
        return services.autoscale(
            deployment.pk,
            1,
            reason="a request arrived while at zero replicas",
            figures={"mode": "wake", "held": held},
            from_replicas=0,
        )
    finally:
        close_old_connections()


def status(deployment: Deployment) -> dict[str, Any]:
    """What the deployment page shows: the policy, the latest decision and the chart."""
    policy = policy_of(deployment.spec)
    state = State.load(deployment)
    return {
        "enabled": policy.enabled,
        "policy": asdict(policy),
        "summary": policy.describe() if policy.enabled else "",
        "desired_replicas": deployment.desired_replicas,
        "last_decision": state.last or None,
        "blocked": state.blocked,
        "chart": state.chart,
    }
