"""Deployment services: revisions with diffs, If-Match, scale without a revision, rollback
within the history limit, pause/stop, delete, history events and reconciler nudges."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache

from core.errors import ConflictError, PreconditionFailed, ServiceError
from core.history import ChangeContext
from core.models import HistoryEvent
from deployments import reconcile_hooks, services
from deployments.choices import DeploymentState, ReplicaState
from deployments.models import Deployment, DeploymentRevision, Replica
from deployments.reconciler import reconcile_deployment
from deployments.spec import SpecError
from models_catalog.services import set_allowed_licences
from tests.broker import Nudges
from tests.deployments.builders import bare_deployment, deploy, gguf_variant, node, spec

pytestmark = pytest.mark.django_db


@pytest.fixture
def nudges() -> Nudges:
    """The reconciler nudges really sent, read back from the control queue."""
    cache.clear()  # nudges are coalesced through the cache: start with no pending mark
    return Nudges(reconcile_hooks.RECONCILE_TASK)


@pytest.fixture
def ctx(operator_user) -> ChangeContext:
    return ChangeContext.for_user(operator_user, reason="ship it")


def events(deployment: Deployment) -> list[HistoryEvent]:
    return list(
        HistoryEvent.objects.filter(
            target_type="deployments.deployment", target_id=str(deployment.pk)
        ).order_by("id")
    )


def test_create_makes_revision_1_an_event_and_runs_the_first_pass_at_once(
    ctx, nudges, django_capture_on_commit_callbacks
):
    variant = gguf_variant()
    with django_capture_on_commit_callbacks(execute=True):
        deployment = services.create_deployment(ctx, "qwen-chat", spec(variant, replicas=2))
    assert nudges == [], "the change's own transaction ran the pass: no worker needed"
    replicas = list(deployment.replicas.order_by("slot"))
    assert [(r.slot, r.state) for r in replicas] == [(0, "pending"), (1, "pending")]
    assert "no node" in replicas[0].reason, "no node is registered: placement says why"
    assert deployment.rollouts.get().state == "running"
    revision = deployment.current_revision
    assert revision is not None and revision.number == 1
    assert revision.author_name == "oscar" and revision.reason == "ship it"
    assert revision.diff["runtime"] == {"before": None, "after": "llamacpp"}
    assert "replicas" not in revision.diff, "the replica count is not part of a revision"
    assert deployment.desired_replicas == 2
    (event,) = events(deployment)
    assert event.verb == "created" and event.reason == "ship it"
    assert event.changes["revision"] == {"before": None, "after": 1}
    assert event.changes["replicas"] == {"before": None, "after": 2}


def test_names_are_dns_labels_and_unique(ctx):
    variant = gguf_variant()
    with pytest.raises(ServiceError, match="lower-case") as caught:
        services.create_deployment(ctx, "Qwen_Chat", spec(variant))
    assert caught.value.field == "name"
    services.create_deployment(ctx, "qwen", spec(variant))
    with pytest.raises(ConflictError, match="already called 'qwen'"):
        services.create_deployment(ctx, "qwen", spec(variant))
    assert Deployment.objects.count() == 1, "the clash rolled back only its own change"


def test_an_invalid_spec_creates_nothing(ctx):
    with pytest.raises(SpecError):
        services.create_deployment(ctx, "broken", spec(gguf_variant(), replicas=100))
    assert not Deployment.objects.exists()


def test_update_makes_revision_n_with_its_diff_against_n_minus_1(ctx, operator_user):
    deployment = deploy(operator_user, "qwen", gguf_variant())
    version = deployment.version
    other = ChangeContext.for_user(operator_user)
    deployment = services.update_spec(
        other,
        deployment,
        {"runtime_args": {"context_size": 8192}, "env": {"OMP_NUM_THREADS": "4"}},
        expected_version=version,
        reason="longer prompts",
    )
    revision = deployment.current_revision
    assert revision is not None and revision.number == 2
    assert revision.reason == "longer prompts"
    assert revision.diff == {
        "env.OMP_NUM_THREADS": {"before": None, "after": "4"},
        "runtime_args.context_size": {"before": None, "after": 8192},
    }
    assert deployment.version == version + 1
    event = events(deployment)[-1]
    assert event.verb == "updated" and event.reason == "longer prompts"
    assert event.changes["revision"] == {"before": 1, "after": 2}
    assert event.changes["runtime_args.context_size"] == {"before": None, "after": 8192}
    # r1 is untouched: revisions are immutable
    first = DeploymentRevision.objects.get(deployment=deployment, number=1)
    assert first.spec["runtime_args"] == {}


def test_a_change_that_changes_nothing_makes_no_revision(ctx, operator_user, nudges):
    deployment = deploy(operator_user, "qwen", gguf_variant())
    before = (deployment.version, len(events(deployment)))
    same = services.update_spec(ctx, deployment, {"runtime_args": {"ctx-size": None}})
    assert same.current_revision.number == 1  # type: ignore[union-attr]
    again = services.update_spec(
        ctx, deployment, {"strategy": {"max_surge": 1}, "placement": {"strategy": "spread"}}
    )
    assert again.current_revision.number == 1  # type: ignore[union-attr]
    assert (again.version, len(events(again))) == before


def test_stale_version_is_refused(ctx, operator_user):
    deployment = deploy(operator_user, "qwen", gguf_variant())
    stale = deployment.version
    services.update_spec(ctx, deployment, {"runtime_args": {"parallel": 2}}, stale)
    with pytest.raises(PreconditionFailed, match="changed by someone else"):
        services.update_spec(ctx, deployment, {"runtime_args": {"parallel": 4}}, stale)
    with pytest.raises(PreconditionFailed):
        services.scale(ctx, deployment, 3, stale)


def test_scaling_is_not_a_revision(ctx, operator_user, nudges, django_capture_on_commit_callbacks):
    deployment = deploy(operator_user, "qwen", gguf_variant())
    with django_capture_on_commit_callbacks(execute=True):
        deployment = services.scale(ctx, deployment, 3)
    assert nudges == []
    assert deployment.replicas.count() == 3, "the scale's own pass made the new slots"
    assert deployment.desired_replicas == 3
    assert deployment.revisions.count() == 1
    event = events(deployment)[-1]
    assert (event.verb, event.changes) == ("scaled", {"replicas": {"before": 1, "after": 3}})
    # a spec patch of the count alone is a scale too
    deployment = services.update_spec(ctx, deployment, {"replicas": 0})
    assert deployment.desired_replicas == 0 and deployment.revisions.count() == 1
    assert events(deployment)[-1].verb == "scaled"
    # the next revision records the count wanted at the time
    deployment = services.update_spec(ctx, deployment, {"runtime_args": {"parallel": 2}})
    assert deployment.current_revision.spec["replicas"] == 0  # type: ignore[union-attr]
    with pytest.raises(ServiceError, match="between 0 and 64"):
        services.scale(ctx, deployment, 65)


def test_scaling_up_obeys_the_licence_policy_scaling_down_does_not(ctx, admin_user, operator_user):
    deployment = deploy(operator_user, "qwen", gguf_variant(), replicas=2)
    set_allowed_licences(ChangeContext.for_user(admin_user), ["mit"])
    with pytest.raises(ServiceError, match=r"licence apache-2\.0 is not in the allowed list"):
        services.scale(ctx, deployment, 3)
    assert services.scale(ctx, deployment, 1).desired_replicas == 1


def test_only_the_newest_revisions_stay_rollbackable(ctx, operator_user):
    deployment = services.create_deployment(
        ctx, "qwen", spec(gguf_variant()), revision_history_limit=2
    )
    for parallel in range(2, 6):  # r2..r5
        deployment = services.update_spec(ctx, deployment, {"runtime_args": {"parallel": parallel}})
    flags = dict(deployment.revisions.values_list("number", "rollbackable"))
    assert flags == {1: False, 2: False, 3: True, 4: True, 5: True}
    assert events(deployment)[-2].changes["no_longer_rollbackable"]["after"] == ["r1"]
    # metadata stays: every revision row and its event
    assert deployment.revisions.count() == 5
    assert [e.verb for e in events(deployment)] == ["created"] + ["updated"] * 4
    with pytest.raises(ConflictError, match="past the revision history limit"):
        services.rollback(ctx, deployment, 2)


def test_the_stable_revision_stays_rollbackable(ctx, operator_user):
    deployment = services.create_deployment(
        ctx, "qwen", spec(gguf_variant()), revision_history_limit=1
    )
    Deployment.objects.filter(pk=deployment.pk).update(stable_revision=deployment.current_revision)
    deployment.refresh_from_db()
    for parallel in range(2, 5):
        deployment = services.update_spec(ctx, deployment, {"runtime_args": {"parallel": parallel}})
    flags = dict(deployment.revisions.values_list("number", "rollbackable"))
    assert flags == {1: True, 2: False, 3: True, 4: True}


def test_rollback_creates_a_new_revision_with_the_old_spec(ctx, operator_user):
    deployment = deploy(operator_user, "qwen", gguf_variant())
    deployment = services.update_spec(ctx, deployment, {"runtime_args": {"context_size": 8192}})
    deployment = services.scale(ctx, deployment, 4)
    deployment = services.rollback(
        ChangeContext.for_user(operator_user, reason="too slow"), deployment, 1
    )
    revision = deployment.current_revision
    assert revision is not None and revision.number == 3
    assert revision.reason == "rollback to r1: too slow"
    assert revision.spec["runtime_args"] == {}
    assert revision.diff == {"runtime_args.context_size": {"before": 8192, "after": None}}
    assert deployment.desired_replicas == 4, "a rollback does not change the replica count"
    assert revision.spec["replicas"] == 4
    event = events(deployment)[-1]
    assert event.verb == "rolled_back"
    assert event.changes["revision"] == {"before": 2, "after": 3}


def test_rollback_refusals(ctx, operator_user):
    deployment = deploy(operator_user, "qwen", gguf_variant())
    with pytest.raises(ConflictError, match="already the current revision"):
        services.rollback(ctx, deployment, 1)
    with pytest.raises(ServiceError, match="has no revision r7"):
        services.rollback(ctx, deployment, 7)
    deployment = services.update_spec(ctx, deployment, {"runtime_args": {"parallel": 2}})
    deployment = services.update_spec(ctx, deployment, {"runtime_args": {"parallel": None}})
    with pytest.raises(ConflictError, match="same spec as the current revision"):
        services.rollback(ctx, deployment, 1)


def test_rollback_checks_the_licence_again(ctx, admin_user, operator_user):
    deployment = deploy(operator_user, "qwen", gguf_variant())
    deployment = services.update_spec(ctx, deployment, {"runtime_args": {"parallel": 2}})
    set_allowed_licences(ChangeContext.for_user(admin_user), ["mit"])
    with pytest.raises(ServiceError, match=r"r1 cannot be deployed again.*licence"):
        services.rollback(ctx, deployment, 1)


def test_pause_resume_stop_start(ctx, admin_user, operator_user):
    deployment = deploy(operator_user, "qwen", gguf_variant())
    deployment = services.pause(ctx, deployment)
    assert (deployment.state, deployment.paused_reason) == (DeploymentState.PAUSED, "ship it")
    assert services.pause(ctx, deployment).version == deployment.version, "paused again: no-op"
    deployment = services.resume(ctx, deployment)
    assert deployment.state == DeploymentState.ACTIVE and deployment.paused_reason == ""
    deployment = services.stop(ctx, deployment)
    assert deployment.state == DeploymentState.STOPPED
    assert deployment.desired_replicas == 1 and deployment.current_revision is not None
    with pytest.raises(ConflictError, match="start it first"):
        services.pause(ctx, deployment)
    set_allowed_licences(ChangeContext.for_user(admin_user), ["mit"])
    with pytest.raises(ServiceError, match="licence policy"):
        services.start(ctx, deployment)
    set_allowed_licences(ChangeContext.for_user(admin_user), ["apache-2.0"])
    deployment = services.start(ctx, deployment)
    assert deployment.state == DeploymentState.ACTIVE
    verbs = [e.verb for e in events(deployment)]
    assert verbs == ["created", "paused", "resumed", "stopped", "started"]


def test_delete_at_once_when_no_replica_is_left(ctx, operator_user):
    deployment = deploy(operator_user, "qwen", gguf_variant())
    pk = deployment.pk
    assert services.delete_deployment(ctx, deployment) is True
    assert not Deployment.objects.filter(pk=pk).exists()
    verbs = [
        e.verb
        for e in HistoryEvent.objects.filter(target_type="deployments.deployment", target_id=pk)
    ]
    assert sorted(verbs) == ["created", "deleted"], "the history outlives the deployment"


def _replica(deployment: Deployment, state: str = ReplicaState.AVAILABLE, **fields: Any) -> Replica:
    assert deployment.current_revision is not None
    return Replica.objects.create(
        deployment=deployment, revision=deployment.current_revision, slot=0, state=state, **fields
    )


def test_delete_with_replicas_stops_first_and_finishes_when_they_are_gone(ctx, operator_user):
    deployment = bare_deployment(operator_user, "qwen", gguf_variant())
    replica = _replica(deployment, node=node("n1"), container_name="fleet-qwen-r1-s0-1")
    assert services.delete_deployment(ctx, deployment) is False
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.STOPPED
    assert deployment.deletion_requested_at is not None
    assert events(deployment)[-1].verb == "deletion_requested"
    with pytest.raises(ConflictError, match="being deleted"):
        services.scale(ctx, deployment, 2)
    with pytest.raises(ConflictError, match="being deleted"):
        services.start(ctx, deployment)
    assert services.delete_deployment(ctx, deployment) is False, "asking again changes nothing"
    assert reconcile_deployment(deployment.pk)
    assert Deployment.objects.filter(pk=deployment.pk).exists(), "its replica is stopping"
    Replica.objects.filter(pk=replica.pk).update(state=ReplicaState.GONE)
    assert reconcile_deployment(deployment.pk)
    assert not Deployment.objects.filter(pk=deployment.pk).exists()
    last = HistoryEvent.objects.filter(target_id=str(deployment.pk)).order_by("-id").first()
    assert last is not None and (last.verb, last.actor_name) == ("deleted", "reconciler")


def test_a_catalog_model_used_by_a_deployment_cannot_be_deleted(operator_user, nudges):
    """Revisions keep their variant for rollbacks: deleting the model is refused, not a 500."""
    from models_catalog import services as catalog_services

    deployment = deploy(operator_user, "qwen", gguf_variant())
    model = deployment.current_revision.variant.model
    with pytest.raises(ConflictError, match="delete those deployments first"):
        catalog_services.delete_model(ChangeContext.system(), model)


@pytest.mark.django_db(transaction=True)  # the other pass's lock is another connection's
def test_a_change_nudges_a_worker_when_another_pass_holds_the_deployment(
    ctx, operator_user, nudges, django_capture_on_commit_callbacks
):
    """The pass in the change's transaction only tries the deployment's lock: while another
    pass holds it, the change commits at once and a worker's pass picks it up."""
    import psycopg
    from django.db import connection

    from deployments.reconcile_pass import LOCK_CLASS

    deployment = deploy(operator_user, "qwen", gguf_variant())
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_CLASS, deployment.pk])
        with django_capture_on_commit_callbacks(execute=True):
            services.scale(ctx, deployment, 2)
    assert nudges == [deployment.pk]
    assert deployment.replicas.count() == 1, "the new slot waits for the worker's pass"
