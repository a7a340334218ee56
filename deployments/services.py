"""Use cases for deployments: create, change the spec (revisions), scale, pause, stop, roll
back, delete. Each is atomic, writes a history event, and runs the deployment's reconcile
pass in its own transaction (:func:`_act_now`), so its orders leave with the commit.

Revisions: every change of the spec's template (anything but ``replicas``) creates an
immutable revision N with its author, time, reason and its diff against N-1; a change that
changes nothing creates none. Scaling is not a revision (as in Kubernetes): it sets
``Deployment.desired_replicas`` and is recorded as a "scaled" event; a new revision's
``spec["replicas"]`` records the count at the time. The newest ``revision_history_limit``
revisions before the current one (and the last stable one) stay rollback-able; older ones
lose only that flag: their rows and their history events stay.

Delete: a deployment whose replicas are all gone is deleted at once. Otherwise it is stopped
and marked (``deletion_requested_at``); the reconciler removes the containers and then
deletes the row (a "deleted" event by the reconciler). The history keeps every event either way.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import ConflictError, ServiceError, check_version
from core.history import ChangeContext, clean_reason, diff, record
from deployments import reconcile_hooks, reconciler
from deployments.autoscaling import is_autoscaled, policy_of
from deployments.choices import DeploymentState, ReplicaState
from deployments.deletion import delete_now
from deployments.models import Deployment, DeploymentRevision
from deployments.spec import (
    MAX_REPLICAS,
    SpecError,
    current_spec,
    flatten_spec,
    merge_spec,
    normalize_spec,
    template,
)
from models_catalog.models import Variant
from models_catalog.services import check_licence

logger = logging.getLogger(__name__)

NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_HISTORY_LIMIT = 100


# --- Helpers --------------------------------------------------------------------------------
def _with_reason(ctx: ChangeContext, reason: str | None) -> ChangeContext:
    return ctx if reason is None else dataclasses.replace(ctx, reason=clean_reason(reason))


def _act_now(deployment_id: int, *, created: bool = False) -> None:
    """Run the deployment's reconcile pass here, in the change's own transaction.

    The pass is the one a worker runs (same code, same advisory lock), so its orders to
    agents leave with this commit instead of after a broker hop and a worker's pick-up: a
    new replica starts about 15 ms sooner. It runs in a savepoint: a pass that fails leaves
    the change itself intact. When it cannot run here (another pass holds the deployment)
    or fails, a worker is nudged on commit instead; the periodic pass is the backstop.
    """
    try:
        acted = reconciler.reconcile_deployment(deployment_id, created=created)
    except Exception:
        logger.exception(
            "the reconcile pass of deployment %s failed; a worker retries it", deployment_id
        )
        acted = False
    if not acted:
        transaction.on_commit(lambda: reconcile_hooks.nudge(deployment_id))


def _locked(deployment: Deployment, expected_version: int | None = None) -> Deployment:
    locked = (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("current_revision")
        .get(pk=deployment.pk)
    )
    check_version(locked.version, expected_version, f"Deployment {locked.name}")
    if locked.deletion_requested_at is not None:
        raise ConflictError(
            f"Deployment {locked.name} is being deleted; it goes once its replicas are gone."
        )
    return locked


def _save(deployment: Deployment, *fields: str) -> None:
    deployment.version += 1
    deployment.save(update_fields=[*fields, "version"])


def _history_limit(value: int | None) -> int | None:
    if value is not None and not 0 <= value <= MAX_HISTORY_LIMIT:
        raise ServiceError(
            f"Keep between 0 and {MAX_HISTORY_LIMIT} old revisions rollback-able.",
            field="revision_history_limit",
        )
    return value


def _refuse_unlicensed(variant: Variant, field: str) -> None:
    reason = check_licence(variant)
    if reason:
        raise ServiceError(f"Refused by the licence policy: {reason}.", field=field)


def _new_revision(
    ctx: ChangeContext,
    deployment: Deployment,
    spec: dict[str, Any],
    previous: dict[str, Any],
    reason: str,
) -> DeploymentRevision:
    last = (  # a deployment has a current revision from its first one on
        deployment.revisions.order_by("-number").values_list("number", flat=True).first()
        if deployment.current_revision_id
        else None
    )
    revision = DeploymentRevision.objects.create(
        deployment=deployment,
        number=(last or 0) + 1,
        spec=spec,
        variant_id=spec["variant"],
        runtime=spec["runtime"],
        diff=diff(flatten_spec(template(previous)), flatten_spec(template(spec))),
        author_type=ctx.actor_type,
        author_name=ctx.actor_name[:150],
        reason=reason,
    )
    deployment.current_revision = revision
    return revision


def _prune(deployment: Deployment) -> list[int]:
    """Clear ``rollbackable`` beyond the history limit; returns the revision numbers cleared."""
    keep = deployment.revision_history_limit
    kept = [pk for pk in (deployment.current_revision_id, deployment.stable_revision_id) if pk]
    older = (
        DeploymentRevision.objects.filter(deployment=deployment, rollbackable=True)
        .exclude(pk__in=kept)
        .order_by("-number")
    )
    expired = list(older.values_list("pk", "number")[keep:])
    if expired:
        DeploymentRevision.objects.filter(pk__in=[pk for pk, _ in expired]).update(
            rollbackable=False
        )
    return sorted(number for _, number in expired)


def _revision_changes(
    before: DeploymentRevision | None, after: DeploymentRevision
) -> dict[str, dict[str, Any]]:
    return {
        "revision": {"before": before.number if before else None, "after": after.number},
        **after.diff,
    }


# --- Create and change ----------------------------------------------------------------------
@transaction.atomic
def create_deployment(
    ctx: ChangeContext,
    name: str,
    spec: dict[str, Any],
    reason: str | None = None,
    *,
    revision_history_limit: int | None = None,
) -> Deployment:
    """A new deployment with revision 1 of ``spec``."""
    ctx = _with_reason(ctx, reason)
    name = (name or "").strip()
    if not NAME.match(name):
        raise ServiceError(
            "Names are 1-63 lower-case letters, digits and '-', starting and ending with a "
            "letter or digit (they name containers).",
            field="name",
        )
    limit = _history_limit(revision_history_limit)
    normalized = normalize_spec(spec)
    deployment = Deployment(
        name=name,
        desired_replicas=normalized["replicas"],
        created_by=ctx.user,
        **({"revision_history_limit": limit} if limit is not None else {}),
    )
    try:  # no savepoint of its own: a clash rolls back this function's atomic block
        deployment.save()
    except IntegrityError:
        raise ConflictError(f"A deployment is already called {name!r}.", field="name") from None
    revision = _new_revision(ctx, deployment, normalized, {}, ctx.reason)
    deployment.save(update_fields=["current_revision"])
    _act_now(deployment.pk, created=True)  # before the history event: its orders go first on commit
    record(
        ctx,
        "created",
        deployment,
        changes={
            "revision": {"before": None, "after": revision.number},
            **diff({}, flatten_spec(normalized)),
        },
    )
    return deployment


@transaction.atomic
def update_spec(
    ctx: ChangeContext,
    deployment: Deployment,
    spec_changes: dict[str, Any],
    expected_version: int | None = None,
    *,
    reason: str | None = None,
    revision_history_limit: int | None = None,
    replace: bool = False,
) -> Deployment:
    """Apply ``spec_changes`` (a JSON merge patch of the spec, or with ``replace`` the whole
    new spec): a change of anything but ``replicas`` makes revision N+1 (validated in full,
    licence included); ``replicas`` alone is a scale; a change that changes nothing makes
    nothing."""
    ctx = _with_reason(ctx, reason)
    deployment = _locked(deployment, expected_version)
    limit = _history_limit(revision_history_limit)
    spec_changes = spec_changes or {}
    if not isinstance(spec_changes, dict):
        raise SpecError({"spec": ["Send the changes as an object."]})
    current = current_spec(deployment)
    replicas = deployment.desired_replicas
    changes: dict[str, dict[str, Any]] = {}
    fields: list[str] = []
    if set(spec_changes) - {"replicas"}:
        new = spec_changes if replace else merge_spec(current, spec_changes)
        normalized = normalize_spec(new)
        replicas = normalized["replicas"]
        if is_autoscaled(normalized) and is_autoscaled(current):
            asked = spec_changes.get("replicas")
            if asked is not None and asked != deployment.desired_replicas:
                _refuse_manual_scale(deployment, policy_of(current).describe())
            replicas = policy_of(normalized).clamp(deployment.desired_replicas)
        if template(normalized) != template(current):
            before = deployment.current_revision
            revision = _new_revision(ctx, deployment, normalized, current, ctx.reason)
            changes.update(_revision_changes(before, revision))
            fields.append("current_revision")
    elif "replicas" in spec_changes:
        replicas = _check_replicas(spec_changes["replicas"])
        if replicas != deployment.desired_replicas and is_autoscaled(current):
            _refuse_manual_scale(deployment, policy_of(current).describe())
    if replicas != deployment.desired_replicas:
        if replicas > deployment.desired_replicas and "revision" not in changes:
            _refuse_unlicensed(deployment.current_revision.variant, "replicas")  # type: ignore[union-attr]
        changes["replicas"] = {"before": deployment.desired_replicas, "after": replicas}
        deployment.desired_replicas = replicas
        fields.append("desired_replicas")
    if limit is not None and limit != deployment.revision_history_limit:
        changes["revision_history_limit"] = {
            "before": deployment.revision_history_limit,
            "after": limit,
        }
        deployment.revision_history_limit = limit
        fields.append("revision_history_limit")
    if not changes:
        return deployment
    _save(deployment, *fields)
    pruned = _prune(deployment)
    if pruned:
        changes["no_longer_rollbackable"] = {"before": None, "after": [f"r{n}" for n in pruned]}
    verb = "scaled" if set(changes) == {"replicas"} else "updated"
    _act_now(deployment.pk)  # before the history event: its orders go first on commit
    record(ctx, verb, deployment, changes=changes)
    return deployment


def _check_replicas(replicas: Any) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ServiceError("Replicas is a whole number.", field="replicas")
    if not 0 <= replicas <= MAX_REPLICAS:
        raise ServiceError(f"Replicas must be between 0 and {MAX_REPLICAS}.", field="replicas")
    return replicas


def _refuse_manual_scale(deployment: Deployment, policy: str) -> None:
    raise ConflictError(
        f"Deployment {deployment.name} is {policy}: the autoscaler sets its replica count. "
        "Change autoscaling.min_replicas / max_replicas in its spec, or turn autoscaling off "
        "(autoscaling.enabled = false) to scale by hand.",
        field="replicas",
    )


def _scale(ctx: ChangeContext, deployment: Deployment, replicas: Any) -> Deployment:
    replicas = _check_replicas(replicas)
    before = deployment.desired_replicas
    if replicas == before:
        return deployment
    if is_autoscaled(deployment.spec):
        _refuse_manual_scale(deployment, policy_of(deployment.spec).describe())
    if replicas > before and deployment.current_revision is not None:
        _refuse_unlicensed(deployment.current_revision.variant, "replicas")
    deployment.desired_replicas = replicas
    _save(deployment, "desired_replicas")
    _act_now(deployment.pk)  # before the history event: its orders go first on commit
    record(ctx, "scaled", deployment, changes={"replicas": {"before": before, "after": replicas}})
    return deployment


@transaction.atomic
def scale(
    ctx: ChangeContext, deployment: Deployment, replicas: int, expected_version: int | None = None
) -> Deployment:
    """Set the desired replica count (no new revision; scaling up checks the licence)."""
    return _scale(ctx, _locked(deployment, expected_version), replicas)


AUTOSCALER = "autoscaler"


@transaction.atomic
def autoscale(
    deployment_id: int,
    replicas: int,
    *,
    reason: str,
    figures: dict[str, Any],
    from_replicas: int | None = None,
) -> bool:
    """The autoscaler's change of the desired count (one "scaled" event, actor autoscaler,
    with the figures that drove it). Nothing happens when the deployment is no longer
    autoscaled, is being deleted, or (``from_replicas``) changed count meanwhile."""
    deployment = (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("current_revision")
        .filter(pk=deployment_id, deletion_requested_at__isnull=True)
        .first()
    )
    if deployment is None or not is_autoscaled(deployment.spec):
        return False
    before = deployment.desired_replicas
    replicas = policy_of(deployment.spec).clamp(replicas)
    if replicas == before or (from_replicas is not None and before != from_replicas):
        return False
    if replicas > before:
        reason_refused = check_licence(deployment.current_revision.variant)  # type: ignore[union-attr]
        if reason_refused:
            return False
    deployment.desired_replicas = replicas
    _save(deployment, "desired_replicas")
    _act_now(deployment.pk)  # before the history event: its orders go first on commit
    record(
        ChangeContext.system(AUTOSCALER, reason=reason),
        "scaled",
        deployment,
        changes={
            "replicas": {"before": before, "after": replicas},
            "autoscaler": {"before": None, "after": figures},
        },
    )
    return True


@transaction.atomic
def rollback(
    ctx: ChangeContext,
    deployment: Deployment,
    to_revision_number: int,
    expected_version: int | None = None,
) -> Deployment:
    """Revision N+1 with the spec of a rollback-able earlier revision ("rollback to rN")."""
    deployment = _locked(deployment, expected_version)
    target = deployment.revisions.filter(number=to_revision_number).first()
    if target is None:
        raise ServiceError(
            f"Deployment {deployment.name} has no revision r{to_revision_number}.",
            field="revision",
        )
    if target.pk == deployment.current_revision_id:
        raise ConflictError(f"r{target.number} is already the current revision.", field="revision")
    if not target.rollbackable:
        raise ConflictError(
            f"r{target.number} is past the revision history limit "
            f"({deployment.revision_history_limit}); only its record remains.",
            field="revision",
        )
    current = current_spec(deployment)
    try:
        normalized = normalize_spec({**target.spec, "replicas": deployment.desired_replicas})
    except SpecError as error:
        raise ServiceError(
            f"r{target.number} cannot be deployed again: {error.message}", field="revision"
        ) from None
    if template(normalized) == template(current):
        raise ConflictError(
            f"r{target.number} has the same spec as the current revision; nothing to roll back.",
            field="revision",
        )
    before = deployment.current_revision
    note = f"rollback to r{target.number}"
    revision = _new_revision(
        ctx, deployment, normalized, current, f"{note}: {ctx.reason}" if ctx.reason else note
    )
    _save(deployment, "current_revision")
    changes = _revision_changes(before, revision)
    pruned = _prune(deployment)
    if pruned:
        changes["no_longer_rollbackable"] = {"before": None, "after": [f"r{n}" for n in pruned]}
    _act_now(deployment.pk)  # before the history event: its orders go first on commit
    record(ctx, "rolled_back", deployment, changes=changes)
    return deployment


# --- State ----------------------------------------------------------------------------------
def _set_state(
    ctx: ChangeContext,
    deployment: Deployment,
    verb: str,
    state: str,
    *,
    paused_reason: str = "",
) -> Deployment:
    before = deployment.state
    deployment.state = state
    deployment.paused_reason = paused_reason
    _save(deployment, "state", "paused_reason")
    _act_now(deployment.pk)  # before the history event: its orders go first on commit
    record(ctx, verb, deployment, changes={"state": {"before": before, "after": state}})
    return deployment


@transaction.atomic
def pause(
    ctx: ChangeContext, deployment: Deployment, expected_version: int | None = None
) -> Deployment:
    """Freeze rollouts where they are (replicas keep running); paused again is a no-op."""
    deployment = _locked(deployment, expected_version)
    if deployment.state == DeploymentState.PAUSED:
        return deployment
    if deployment.state == DeploymentState.STOPPED:
        raise ConflictError(f"Deployment {deployment.name} is stopped; start it first.")
    return _set_state(
        ctx, deployment, "paused", DeploymentState.PAUSED, paused_reason=ctx.reason or "paused"
    )


@transaction.atomic
def resume(
    ctx: ChangeContext, deployment: Deployment, expected_version: int | None = None
) -> Deployment:
    deployment = _locked(deployment, expected_version)
    if deployment.state == DeploymentState.ACTIVE:
        return deployment
    if deployment.state == DeploymentState.STOPPED:
        raise ConflictError(f"Deployment {deployment.name} is stopped; start it instead.")
    return _set_state(ctx, deployment, "resumed", DeploymentState.ACTIVE)


@transaction.atomic
def stop(
    ctx: ChangeContext, deployment: Deployment, expected_version: int | None = None
) -> Deployment:
    """No replicas wanted; the spec, the replica count and the revisions are kept."""
    deployment = _locked(deployment, expected_version)
    if deployment.state == DeploymentState.STOPPED:
        return deployment
    return _set_state(ctx, deployment, "stopped", DeploymentState.STOPPED)


@transaction.atomic
def start(
    ctx: ChangeContext, deployment: Deployment, expected_version: int | None = None
) -> Deployment:
    """Run a stopped deployment again (its variant must still pass the licence policy)."""
    deployment = _locked(deployment, expected_version)
    if deployment.state != DeploymentState.STOPPED:
        return deployment
    if deployment.current_revision is not None:
        _refuse_unlicensed(deployment.current_revision.variant, "state")
    return _set_state(ctx, deployment, "started", DeploymentState.ACTIVE)


# --- Delete ---------------------------------------------------------------------------------
def _has_live_replicas(deployment: Deployment) -> bool:
    """Replicas that may have a container (one still waiting for a node or its files has none)."""
    no_container = [ReplicaState.GONE, ReplicaState.PENDING, ReplicaState.DOWNLOADING]
    return deployment.replicas.exclude(state__in=no_container).exists()


@transaction.atomic
def delete_deployment(
    ctx: ChangeContext, deployment: Deployment, expected_version: int | None = None
) -> bool:
    """Delete now (True) when no replica is left; else stop it and mark it for deletion
    (False): the reconciler removes the containers, then the row."""
    locked = (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("current_revision")
        .get(pk=deployment.pk)
    )
    check_version(locked.version, expected_version, f"Deployment {locked.name}")
    if not _has_live_replicas(locked):
        delete_now(ctx, locked)
        return True
    if locked.deletion_requested_at is None:
        before = locked.state
        locked.state = DeploymentState.STOPPED
        locked.deletion_requested_at = timezone.now()
        _save(locked, "state", "deletion_requested_at")
        record(
            ctx,
            "deletion_requested",
            locked,
            changes={"state": {"before": before, "after": DeploymentState.STOPPED}},
        )
        _act_now(locked.pk)
    # the pass deletes the row itself when no replica was running
    return not Deployment.objects.filter(pk=locked.pk).exists()
