"""FilterSets shared by the API and the pages."""

from __future__ import annotations

import datetime as dt
from typing import Any

import django_filters
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField

from core.choices import ActorType, Role, TokenScope
from core.jobs import Job, JobKind, JobState
from core.models import ApiToken, HistoryEvent, User


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, turned into UTC: PostgreSQL refuses offsets beyond ±15:59 that
    Python accepts (up to ±23:59), and an instant outside years 1–9999 is a 400, not a 500."""

    def to_python(self, value: Any) -> dt.datetime | None:
        parsed = super().to_python(value)
        if parsed is None or parsed.tzinfo is None:
            return parsed
        try:
            return parsed.astimezone(dt.UTC)
        except OverflowError:
            raise ValidationError("Enter a date and time between years 1 and 9999.") from None


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class HistoryEventFilterSet(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor_name", label="Actor (user or node name)")
    actor_type = django_filters.ChoiceFilter(choices=ActorType.choices)
    target_type = django_filters.CharFilter()
    target_id = django_filters.CharFilter()
    verb = django_filters.CharFilter()
    since = UtcDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    q = django_filters.CharFilter(
        field_name="target_name", lookup_expr="icontains", label="Target name contains"
    )

    class Meta:
        model = HistoryEvent
        fields = ["actor", "actor_type", "target_type", "target_id", "verb", "since", "until", "q"]


class ApiTokenFilterSet(django_filters.FilterSet):
    user = django_filters.CharFilter(field_name="user__username")
    scope = django_filters.ChoiceFilter(choices=TokenScope.choices)
    active = django_filters.BooleanFilter(method="filter_active")

    class Meta:
        model = ApiToken
        fields = ["user", "scope", "active"]

    def filter_active(self, queryset, name, value):  # type: ignore[no-untyped-def]
        usable = ApiToken.objects.usable().values("pk")
        return queryset.filter(pk__in=usable) if value else queryset.exclude(pk__in=usable)


class UserFilterSet(django_filters.FilterSet):
    role = django_filters.ChoiceFilter(choices=Role.choices)
    is_active = django_filters.BooleanFilter()
    q = django_filters.CharFilter(field_name="username", lookup_expr="icontains")

    class Meta:
        model = User
        fields = ["role", "is_active", "q"]


class JobFilterSet(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=JobKind.choices)
    state = django_filters.ChoiceFilter(choices=JobState.choices)
    active = django_filters.BooleanFilter(method="filter_active", label="Queued or running")
    node = django_filters.NumberFilter(field_name="node_id", label="Node id")
    node_name = django_filters.CharFilter(field_name="node__name", label="Node name")
    target_type = django_filters.CharFilter()
    target_id = django_filters.CharFilter()
    target = django_filters.CharFilter(
        field_name="target_name", lookup_expr="icontains", label="Target contains"
    )
    actor = django_filters.CharFilter(field_name="actor_name", label="Actor")

    class Meta:
        model = Job
        fields = [
            "kind",
            "state",
            "active",
            "node",
            "node_name",
            "target_type",
            "target_id",
            "target",
            "actor",
        ]

    def filter_active(self, queryset, name, value):  # type: ignore[no-untyped-def]
        active = [JobState.QUEUED, JobState.RUNNING]
        return queryset.filter(state__in=active) if value else queryset.exclude(state__in=active)
