"""The rollout state machine, applied by each reconcile pass of an active deployment.

- A rollout row exists while the current revision is not yet stable; a newer revision
  supersedes a running one (its replicas become "old" and are replaced in batches).
- Progress: more available current replicas or fewer old ones. None within the strategy's
  ``progress_deadline_seconds`` (downloads excepted: a replica waiting for its files keeps
  the clock still), or a current replica failing its health gate, fails the rollout.
- A failed rollout reverts to the stable revision (``auto_revert``, when one exists); a
  failed rollback, or a failure with nothing to revert to, pauses the deployment for a
  human. Nothing here starts a rollout again by itself: it never loops.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.history import record
from deployments import gates, new_replicas
from deployments.choices import DeploymentState, ReplicaState, RolloutState
from deployments.models import DeploymentRevision, Replica, Rollout
from deployments.reconcile_pass import SYSTEM, Pass
from deployments.rollouts import Policy, plan, policy, template_key

MAX_STEPS = 200
# a gate waits this long for a stable replica to be available again before measuring the new
# revision alone (its ratio checks are then skipped, and say so)
STABLE_WAIT_SECONDS = 60
OPEN = (RolloutState.RUNNING, RolloutState.PAUSED)


def reconcile_desired(p: Pass) -> None:
    deployment = p.deployment
    if deployment.state == DeploymentState.STOPPED or deployment.deletion_requested_at:
        _stop_everything(p)
        return
    target = deployment.current_revision
    if target is None:
        return
    rollout = _open_rollout(p, target)
    if deployment.state == DeploymentState.PAUSED:
        if rollout is not None and rollout.state == RolloutState.RUNNING:
            _set(p, rollout, RolloutState.PAUSED)
        return
    if rollout is not None and rollout.state == RolloutState.PAUSED:
        rollout.last_progress_at = p.now
        _set(p, rollout, RolloutState.RUNNING)
    rules = policy(dict(target.spec), deployment.desired_replicas)
    key = template_key(dict(target.spec))
    keys: dict[int, str] = {target.pk: key}

    def is_current(replica: Replica) -> bool:
        if replica.revision_id not in keys:
            keys[replica.revision_id] = template_key(dict(replica.revision.spec))
        node = p.nodes.get(replica.node_id) if replica.node_id else None
        moving = node is not None and (node.draining or node.maintenance)
        return keys[replica.revision_id] == key and not moving

    p.undrain(rules.replicas, is_current)
    decided = plan(
        p.live(),
        is_current=is_current,
        replicas=rules.replicas,
        max_surge=_surge(p, rules, is_current),
        max_unavailable=rules.max_unavailable,
    )
    gate_spec = gates.of_spec(dict(target.spec))
    holding = _holding(p, rollout, gate_spec, rules, is_current)
    for replica in decided.stop:
        if holding and not is_current(replica) and replica.slot < rules.replicas:
            continue  # the gate measures the stable revision too: kept until the verdict
        reason = _stop_reason(replica, target, rules, is_current)
        p.stop(replica, reason, drain=replica.slot >= rules.replicas)
    for replica in p.live():
        if replica.state == ReplicaState.PENDING and replica.node_id is None:
            new_replicas.place_and_start(p, replica)
    failing = (
        rollout is not None
        and rollout.state == RolloutState.RUNNING
        and any(
            r.state == ReplicaState.FAILED and r.revision_id == rollout.to_revision_id
            for r in p.changed.values()
        )
    )
    for slot in decided.create if not failing else ():  # a failing rollout fails below:
        new_replicas.create_replica(p, target, slot)  # no second try of its revision
    if rollout is not None and rollout.state == RolloutState.RUNNING:
        _judge(p, rollout, rules, is_current, gate_spec)


def _surge(p: Pass, rules: Policy, is_current: Any) -> int:
    """``max_surge`` less the stale containers still running (see Pass.stale_containers);
    only a rollout (old replicas to replace) surges, so only then are they looked for."""
    if rules.max_surge == 0 or all(is_current(r) for r in p.live()):
        return rules.max_surge
    return max(0, rules.max_surge - p.stale_containers())


def _holding(
    p: Pass,
    rollout: Rollout | None,
    gate_spec: dict[str, Any] | None,
    rules: Policy,
    is_current: Any,
) -> bool:
    """Old replicas stay while a gate has yet to pass, once a new replica exists."""
    if rollout is None or gate_spec is None or rollout.is_rollback:
        return False
    if rollout.gate.get("state") == gates.GATE_PASSED:
        return False
    return any(is_current(r) and r.slot < rules.replicas for r in p.live())


def _stop_reason(
    replica: Replica, target: DeploymentRevision, rules: Policy, is_current: Any
) -> str:
    if replica.slot >= rules.replicas:
        return "scaled down"
    if is_current(replica):
        return "a duplicate of its slot"
    if template_key(dict(replica.revision.spec)) == template_key(dict(target.spec)):
        return "moved off a draining node"  # same containers: only its node made it old
    return f"replaced by revision {target.number}"


def _stop_everything(p: Pass) -> None:
    deployment = p.deployment
    reason = "deployment deleted" if deployment.deletion_requested_at else "deployment stopped"
    for replica in p.live():
        p.stop(replica, reason)
    for rollout in Rollout.objects.select_for_update().filter(
        deployment=deployment, state__in=OPEN
    ):
        rollout.failure_reason = reason
        _set(p, rollout, RolloutState.SUPERSEDED, finished=True)
    if deployment.deletion_requested_at and all(
        r.state in (ReplicaState.GONE, ReplicaState.FAILED) for r in p.replicas
    ):
        p.delete_deployment = True


def _open_rollout(p: Pass, target: DeploymentRevision) -> Rollout | None:
    """The running or paused rollout to ``target``; supersedes others, creates one if due."""
    deployment = p.deployment
    mine: Rollout | None = None
    previous: DeploymentRevision | None = None
    open_rollouts = (
        []
        if p.created
        else Rollout.objects.select_for_update().filter(deployment=deployment, state__in=OPEN)
    )
    for rollout in open_rollouts:
        if rollout.to_revision_id == target.pk and mine is None:
            mine = rollout
            continue
        rollout.failure_reason = f"superseded by revision {target.number}"
        previous = rollout.to_revision
        _set(p, rollout, RolloutState.SUPERSEDED, finished=True)
    if mine is not None or deployment.state != DeploymentState.ACTIVE:
        return mine
    if deployment.stable_revision_id == target.pk:
        return None
    rollout = Rollout(
        deployment=deployment,
        from_revision=previous or deployment.stable_revision,
        to_revision=target,
        started_at=p.now,
        last_progress_at=p.now,
    )
    p.changed_rollouts[id(rollout)] = rollout  # inserted (and pushed) when the pass ends
    return rollout


def _judge(
    p: Pass, rollout: Rollout, rules: Policy, is_current: Any, gate_spec: dict[str, Any] | None
) -> None:
    """Record progress; succeed, or fail on a health gate, a rollout gate or the deadline."""
    live = p.live()
    current = [r for r in live if r.slot < rules.replicas and is_current(r)]
    old = [r for r in live if not is_current(r) or r.slot >= rules.replicas]
    available = sorted({r.slot for r in current if r.state == ReplicaState.AVAILABLE})
    failed = _failed_current(p, rollout)
    if failed is not None:
        _fail(p, rollout, f"replica {failed.pk} (slot {failed.slot}) failed: {failed.reason}")
        return
    counts = {"available": len(available), "old": len(old), "wanted": rules.replicas}
    last = rollout.steps[-1] if rollout.steps else {}
    if {k: last.get(k) for k in counts} != counts:
        rollout.steps = [*rollout.steps, {"at": p.now.isoformat(), **counts}][-MAX_STEPS:]
        rollout.last_progress_at = p.now
        p.changed_rollouts[id(rollout)] = rollout
    elif any(r.state == ReplicaState.DOWNLOADING for r in current):
        rollout.last_progress_at = p.now  # waiting for files is not a lack of progress
        p.changed_rollouts[id(rollout)] = rollout
    gated = gate_spec is not None and not rollout.is_rollback
    if gated and rollout.gate.get("state") != gates.GATE_PASSED:
        assert gate_spec is not None
        _gate(p, rollout, gate_spec, current, old)
        return
    if len(available) == rules.replicas and not old:
        deployment = p.deployment
        deployment.stable_revision = rollout.to_revision
        p.deployment_changed = True
        _set(p, rollout, RolloutState.SUCCEEDED, finished=True)
        return
    idle = (p.now - rollout.last_progress_at).total_seconds()
    if idle > rules.progress_deadline:
        _fail(p, rollout, f"no progress within {rules.progress_deadline:g} s")


def _gate(
    p: Pass, rollout: Rollout, spec: dict[str, Any], current: list[Replica], old: list[Replica]
) -> None:
    """Start the gate once a new replica is available, then wait for its verdict."""
    rollout.last_progress_at = p.now  # the gate's own timeout bounds the wait
    p.changed_rollouts[id(rollout)] = rollout
    state = rollout.gate.get("state")
    runner = gates.runner()
    if runner is None:
        _fail(p, rollout, "the revision has rollout gates but no gate runner is installed")
        return
    if not state:
        new = [r for r in current if r.state == ReplicaState.AVAILABLE]
        if not new or rollout.pk is None:
            return
        stable_live = [
            r
            for r in old
            if rollout.from_revision_id is not None and r.revision_id == rollout.from_revision_id
        ]
        stable = [r for r in stable_live if r.state == ReplicaState.AVAILABLE]
        if stable_live and not stable:  # restarting, say: compare with it once it is back
            since = datetime.fromisoformat(
                rollout.gate.setdefault("waiting_since", p.now.isoformat())
            )
            if (p.now - since).total_seconds() < STABLE_WAIT_SECONDS:
                return
        try:
            rollout.gate = runner.start(rollout, spec, new[0], stable[0] if stable else None)
        except Exception as exc:  # a deleted profile, say: fail with the reason
            _fail(p, rollout, f"the rollout gate could not start: {exc}")
            return
        rollout.steps = [*rollout.steps, {"at": p.now.isoformat(), "gate": "started"}][-MAX_STEPS:]
        return
    if state != gates.GATE_RUNNING:
        return
    verdict = runner.verdict(rollout, spec)
    if verdict is None:
        started = datetime.fromisoformat(rollout.gate.get("started_at") or p.now.isoformat())
        limit = float(spec.get("timeout_seconds") or 1800)
        if (p.now - started).total_seconds() > limit:
            runner.cancel(rollout)
            rollout.gate = {**rollout.gate, "state": gates.GATE_FAILED}
            _fail(p, rollout, f"the rollout gate did not finish within {limit:g} s")
        return
    rollout.gate = verdict
    passed = verdict.get("state") == gates.GATE_PASSED
    rollout.steps = [
        *rollout.steps,
        {"at": p.now.isoformat(), "gate": verdict.get("state"), "summary": verdict.get("summary")},
    ][-MAX_STEPS:]
    record(
        SYSTEM,
        "gate_passed" if passed else "gate_failed",
        p.deployment,
        changes={
            "gate": {
                "before": None,
                "after": {
                    "revision": rollout.to_revision.number,
                    "summary": verdict.get("summary"),
                    "checks": verdict.get("checks"),
                },
            }
        },
    )
    if not passed:
        _fail(p, rollout, f"the rollout gate failed: {verdict.get('summary', '')}")


def _failed_current(p: Pass, rollout: Rollout) -> Replica | None:
    for replica in p.changed.values():
        if (
            replica.state == ReplicaState.FAILED
            and replica.revision_id == rollout.to_revision_id
            and replica.created_at >= rollout.started_at
        ):
            return replica
    if rollout.started_at == p.now:
        return None  # begun in this pass: its replicas are all in ``p.changed``
    return (
        Replica.objects.filter(
            deployment=p.deployment,
            revision_id=rollout.to_revision_id,
            state=ReplicaState.FAILED,
            created_at__gte=rollout.started_at,
        )
        .order_by("pk")
        .first()
    )


def _fail(p: Pass, rollout: Rollout, reason: str) -> None:
    deployment = p.deployment
    rollout.failure_reason = reason[:4000]
    target = rollout.to_revision
    stable = deployment.stable_revision
    rules = policy(dict(target.spec), deployment.desired_replicas)
    if rollout.is_rollback or not (rules.auto_revert and stable and stable.pk != target.pk):
        _set(
            p,
            rollout,
            RolloutState.PAUSED if rollout.is_rollback else RolloutState.FAILED,
            finished=True,
        )
        what = "rollback" if rollout.is_rollback else "rollout"
        deployment.state = DeploymentState.PAUSED
        deployment.paused_reason = (
            f"The {what} to revision {target.number} failed ({reason}). Paused for a human: "
            "fix the spec, roll back to another revision, or resume."
        )[:4000]
        p.deployment_changed = True
        record(
            SYSTEM,
            "paused",
            deployment,
            changes={"state": {"before": DeploymentState.ACTIVE, "after": DeploymentState.PAUSED}},
        )
        return
    assert stable is not None
    _set(p, rollout, RolloutState.FAILED, finished=True)
    deployment.current_revision = stable
    p.deployment_changed = True
    revert = Rollout(
        deployment=deployment,
        from_revision=target,
        to_revision=stable,
        is_rollback=True,
        started_at=p.now,
        last_progress_at=p.now,
    )
    p.changed_rollouts[id(revert)] = revert  # inserted (and pushed) when the pass ends
    record(
        SYSTEM,
        "auto_reverted",
        deployment,
        changes={
            "current_revision": {"before": target.number, "after": stable.number},
            "reason": {"before": None, "after": reason[:500]},
        },
    )


def _set(p: Pass, rollout: Rollout, state: str, *, finished: bool = False) -> None:
    rollout.state = state
    if finished:
        rollout.finished_at = p.now
        runner = gates.runner()
        if rollout.gate.get("state") == gates.GATE_RUNNING and runner is not None:
            runner.cancel(rollout)  # superseded or stopped while its gate ran
            rollout.gate = {**rollout.gate, "state": "cancelled"}
    p.changed_rollouts[id(rollout)] = rollout
