from __future__ import annotations

from datetime import timedelta
from typing import Any

import django_filters
from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from fleet.choices import NodeState
from fleet.models import Node


class NodeFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(
        choices=NodeState.choices, method="filter_status", label="Status"
    )
    label = django_filters.CharFilter(method="filter_label", label="Label (key=value or key)")
    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains")
    cordoned = django_filters.BooleanFilter()

    class Meta:
        model = Node
        fields = ["status", "label", "q", "cordoned"]

    def filter_status(self, queryset: QuerySet[Node], name: str, value: str) -> QuerySet[Node]:
        # judged like Node.get_status(): a ready node past the grace period is unreachable
        cutoff = timezone.now() - timedelta(seconds=settings.FLEET_NODE_GRACE_SECONDS)
        stale = Q(state=NodeState.READY, last_heartbeat_at__lt=cutoff)
        if value == NodeState.UNREACHABLE:
            return queryset.filter(Q(state=NodeState.UNREACHABLE) | stale)
        return queryset.filter(state=value).exclude(stale)

    def filter_label(self, queryset: QuerySet[Node], name: str, value: str) -> QuerySet[Node]:
        key, _, wanted = value.partition("=")
        lookup: dict[str, Any] = {f"labels__{key}": wanted} if _ else {"labels__has_key": key}
        return queryset.filter(**lookup)
