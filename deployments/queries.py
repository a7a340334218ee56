"""Querysets shared by the API and the pages: deployments with their replica counts, status
and live replicas in a constant number of queries; one deployment with the same attributes."""

from __future__ import annotations

from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)

from deployments.choices import DeploymentState, ReplicaState, RolloutState
from deployments.models import Deployment, Replica, Rollout

# Replicas that exist or are about to (as the reconciler counts them).
LIVE_STATES = (
    ReplicaState.PENDING,
    ReplicaState.DOWNLOADING,
    ReplicaState.STARTING,
    ReplicaState.HEALTHY,
    ReplicaState.AVAILABLE,
)


def live_replicas() -> QuerySet[Replica]:
    return (
        Replica.objects.exclude(state=ReplicaState.GONE)
        .select_related("node", "revision")
        .order_by("slot", "-created_at")
    )


def deployments(queryset: QuerySet[Deployment] | None = None) -> QuerySet[Deployment]:
    """Deployments annotated with ``ready_count``, ``up_to_date_count``, ``rollout_state``
    and ``status`` (as :meth:`Deployment.get_status` says), and ``live_replicas``."""
    queryset = Deployment.objects.all() if queryset is None else queryset
    latest_rollout = Rollout.objects.filter(deployment=OuterRef("pk")).order_by(
        "-started_at", "-id"
    )
    return (
        queryset.select_related("current_revision__variant__model", "stable_revision", "created_by")
        .annotate(
            ready_count=Count(
                "replicas", filter=Q(replicas__state=ReplicaState.AVAILABLE), distinct=True
            ),
            up_to_date_count=Count(
                "replicas",
                filter=Q(
                    replicas__state__in=LIVE_STATES,
                    replicas__revision_id=F("current_revision_id"),
                ),
                distinct=True,
            ),
            rollout_state=Subquery(latest_rollout.values("state")[:1]),
        )
        .annotate(
            status=Case(
                When(deletion_requested_at__isnull=False, then=Value("deleting")),
                When(state=DeploymentState.PAUSED, then=Value(DeploymentState.PAUSED)),
                When(state=DeploymentState.STOPPED, then=Value(DeploymentState.STOPPED)),
                When(rollout_state=RolloutState.FAILED, then=Value("failed")),
                When(
                    ready_count__gte=F("desired_replicas"),
                    up_to_date_count=F("desired_replicas"),
                    then=Value("available"),
                ),
                When(
                    Q(rollout_state=RolloutState.RUNNING)
                    | Q(up_to_date_count__lt=F("desired_replicas")),
                    then=Value("progressing"),
                ),
                default=Value("degraded"),
                output_field=CharField(),
            )
        )
        .prefetch_related(Prefetch("replicas", queryset=live_replicas(), to_attr="live_replicas"))
        .order_by("name")  # the aggregates drop Meta.ordering
    )


def deployment(pk: int) -> Deployment:
    """One deployment with the attributes :func:`deployments` annotates, counted in Python
    from its live replicas (which it loads anyway): for one row, building the aggregate SQL
    costs several times more than counting. Raises ``Deployment.DoesNotExist``."""
    found = (
        Deployment.objects.select_related(
            "current_revision__variant__model", "stable_revision", "created_by"
        )
        .prefetch_related(Prefetch("replicas", queryset=live_replicas(), to_attr="live_replicas"))
        .get(pk=pk)
    )
    replicas: list[Replica] = found.live_replicas  # type: ignore[attr-defined]
    ready = sum(r.state == ReplicaState.AVAILABLE for r in replicas)
    up_to_date = sum(
        r.state in LIVE_STATES and r.revision_id == found.current_revision_id for r in replicas
    )
    rollout_state = (
        Rollout.objects.filter(deployment=found)
        .order_by("-started_at", "-id")
        .values_list("state", flat=True)
        .first()
    )
    counted = {
        "ready_count": ready,
        "up_to_date_count": up_to_date,
        "rollout_state": rollout_state,
        "status": found.get_status(ready, up_to_date, rollout_state),
    }
    for name, value in counted.items():  # the names the list's annotations use
        setattr(found, name, value)
    return found
