"""Rollout policy and the batch planner (pure functions; the reconciler applies the plan).

Terms: a deployment wants ``replicas`` slots (0..N-1) at its current revision. A replica is
*current* when its revision has the same container template as the current revision (a
scale-only revision changes nothing running) and its node is not draining; every other live
replica is *old*. A slot is *available* when one of its replicas is available.

Each reconcile pass, per slot in order (start-first by default):

1. a slot whose current replica is available stops its old replicas (and extra current ones);
2. old replicas that serve nothing (pending, downloading, starting, healthy) stop at once;
3. a slot without a current replica gets one while live replicas < N + max_surge; when the
   surge is used up and ``max_unavailable`` allows, an old available replica stops first.

So at any time: live replicas ≤ N + max_surge and available slots ≥ N − max_unavailable
(once they were reached), and per (slot, revision) at most one live replica.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from deployments.choices import ReplicaState

# Replicas that exist or are about to (not stopping, failed or gone).
LIVE = (
    ReplicaState.PENDING,
    ReplicaState.DOWNLOADING,
    ReplicaState.STARTING,
    ReplicaState.HEALTHY,
    ReplicaState.AVAILABLE,
)
# Replicas whose container should be running on their node.
RUNNING = (ReplicaState.STARTING, ReplicaState.HEALTHY, ReplicaState.AVAILABLE)


@dataclass(frozen=True)
class Policy:
    replicas: int = 1
    max_surge: int = 1
    max_unavailable: int = 0
    min_healthy_seconds: float = 5.0
    healthy_deadline: float = 300.0
    progress_deadline: float = 600.0
    auto_revert: bool = True


def _count(value: Any, total: int, *, round_up: bool) -> int:
    """An absolute count or a percentage of ``total`` ("25%")."""
    if isinstance(value, str) and value.strip().endswith("%"):
        share = float(value.strip()[:-1]) * total / 100.0
        return int(math.ceil(share) if round_up else math.floor(share))
    return max(0, int(value))


def policy(spec: dict[str, Any], replicas: int | None = None) -> Policy:
    """The rollout policy of a revision's spec (its ``strategy``, see ``deployments.spec``);
    ``replicas`` is the deployment's desired count (scaling is not a revision)."""
    raw = spec.get("strategy")
    nested: dict[str, Any] = raw if isinstance(raw, dict) else {}
    defaults = Policy()

    def get(*names: str, default: Any) -> Any:
        for name in names:
            if name in nested:
                return nested[name]
            if name in spec:
                return spec[name]
        return default

    if replicas is None:
        replicas = int(spec.get("replicas", defaults.replicas))
    replicas = max(0, replicas)
    surge = _count(get("max_surge", default=defaults.max_surge), replicas, round_up=True)
    unavailable = _count(
        get("max_unavailable", default=defaults.max_unavailable), replicas, round_up=False
    )
    if surge == 0 and unavailable == 0:
        surge = 1  # neither may be zero: nothing could move
    return Policy(
        replicas=replicas,
        max_surge=surge,
        max_unavailable=unavailable,
        min_healthy_seconds=float(get("min_healthy_seconds", default=defaults.min_healthy_seconds)),
        healthy_deadline=float(
            get("healthy_deadline_seconds", "healthy_deadline", default=defaults.healthy_deadline)
        ),
        progress_deadline=float(
            get(
                "progress_deadline_seconds",
                "progress_deadline",
                default=defaults.progress_deadline,
            )
        ),
        auto_revert=bool(get("auto_revert", default=defaults.auto_revert)),
    )


def template_key(spec: dict[str, Any]) -> str:
    """What the containers of a revision run; equal keys need no restart between revisions."""
    from deployments.spec import template

    shape = {
        key: value
        for key, value in template(dict(spec)).items()
        if key not in ("strategy", "autoscaling")  # how it rolls out and scales, not what runs
    }
    text = json.dumps(shape, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ReplicaLike(Protocol):
    pk: int
    slot: int
    state: str


@dataclass
class Plan:
    stop: list[Any] = field(default_factory=list)
    create: list[int] = field(default_factory=list)  # slots that get a new current replica


def plan(
    live: Iterable[Any], *, is_current: Any, replicas: int, max_surge: int, max_unavailable: int
) -> Plan:
    """Which replicas to stop and which slots get a new current replica, this pass."""
    result = Plan()
    stopping: set[int] = set()
    rows = [r for r in live if r.state in LIVE]

    def stop(replica: Any) -> None:
        if replica.pk not in stopping:
            stopping.add(replica.pk)
            result.stop.append(replica)

    for replica in rows:
        if replica.slot >= replicas:
            stop(replica)  # scaled down
    by_slot: dict[int, tuple[list[Any], list[Any]]] = {}
    for replica in rows:
        if replica.slot < replicas:
            current, old = by_slot.setdefault(replica.slot, ([], []))
            (current if is_current(replica) else old).append(replica)

    for slot in range(replicas):
        current, old = by_slot.get(slot, ([], []))
        keep = _best(current)
        for extra in current:
            if extra is not keep:
                stop(extra)
        if keep is not None and keep.state == ReplicaState.AVAILABLE:
            for replica in old:
                stop(replica)
        for replica in old:
            if replica.state != ReplicaState.AVAILABLE:
                stop(replica)

    def slot_available(slot: int) -> bool:
        current, old = by_slot.get(slot, ([], []))
        return any(
            r.state == ReplicaState.AVAILABLE and r.pk not in stopping for r in current + old
        )

    total = sum(1 for r in rows if r.pk not in stopping)
    available = sum(1 for slot in range(replicas) if slot_available(slot))
    for slot in range(replicas):
        current, old = by_slot.get(slot, ([], []))
        if any(r.pk not in stopping for r in current):
            continue
        if total >= replicas + max_surge:
            serving = [r for r in old if r.pk not in stopping and r.state == ReplicaState.AVAILABLE]
            if serving and available - 1 >= replicas - max_unavailable:
                for replica in serving:
                    stop(replica)
                total -= len(serving)
                available -= 1
        if total < replicas + max_surge:
            result.create.append(slot)
            total += 1
    return result


_RANK = {
    ReplicaState.AVAILABLE: 0,
    ReplicaState.HEALTHY: 1,
    ReplicaState.STARTING: 2,
    ReplicaState.DOWNLOADING: 3,
    ReplicaState.PENDING: 4,
}


def _best(replicas: list[Any]) -> Any | None:
    """The replica a slot keeps: the most advanced, then the oldest."""
    if not replicas:
        return None
    return min(replicas, key=lambda r: (_RANK.get(r.state, 9), r.pk))
