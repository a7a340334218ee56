"""FilterSets shared by the API and the pages."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from deployments.choices import DeploymentState, ReplicaState, RolloutState, Runtime
from deployments.models import STATUSES, Deployment, Replica, Rollout
from deployments.queries import LIVE_STATES


class DeploymentFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains", label="Name")
    status = django_filters.ChoiceFilter(choices=STATUSES, label="Status")
    state = django_filters.ChoiceFilter(choices=DeploymentState.choices)
    runtime = django_filters.ChoiceFilter(
        choices=Runtime.choices, field_name="current_revision__runtime", label="Runtime"
    )
    model = django_filters.CharFilter(
        field_name="current_revision__variant__model__repo_id",
        lookup_expr="icontains",
        label="Model",
    )
    variant = django_filters.NumberFilter(
        field_name="current_revision__variant_id", label="Variant id"
    )
    node = django_filters.CharFilter(method="filter_node", label="Node")

    class Meta:
        model = Deployment
        fields = ["q", "status", "state", "runtime", "model", "variant", "node"]

    def filter_node(
        self, queryset: QuerySet[Deployment], name: str, value: str
    ) -> QuerySet[Deployment]:
        on_node = Replica.objects.filter(node__name=value, state__in=LIVE_STATES)
        return queryset.filter(pk__in=on_node.values("deployment_id"))


class ReplicaFilterSet(django_filters.FilterSet):
    deployment = django_filters.NumberFilter(field_name="deployment_id")
    deployment_name = django_filters.CharFilter(field_name="deployment__name")
    node = django_filters.NumberFilter(field_name="node_id")
    node_name = django_filters.CharFilter(field_name="node__name")
    state = django_filters.MultipleChoiceFilter(choices=ReplicaState.choices)
    revision = django_filters.NumberFilter(field_name="revision__number")
    live = django_filters.BooleanFilter(method="filter_live", label="Not gone, failed or stopping")

    class Meta:
        model = Replica
        fields = ["deployment", "deployment_name", "node", "node_name", "state", "revision", "live"]

    def filter_live(self, queryset: QuerySet[Replica], name: str, value: bool) -> QuerySet[Replica]:
        return (
            queryset.filter(state__in=LIVE_STATES)
            if value
            else queryset.exclude(state__in=LIVE_STATES)
        )


class RolloutFilterSet(django_filters.FilterSet):
    deployment = django_filters.NumberFilter(field_name="deployment_id")
    deployment_name = django_filters.CharFilter(field_name="deployment__name")
    state = django_filters.ChoiceFilter(choices=RolloutState.choices)
    is_rollback = django_filters.BooleanFilter()

    class Meta:
        model = Rollout
        fields = ["deployment", "deployment_name", "state", "is_rollback"]
