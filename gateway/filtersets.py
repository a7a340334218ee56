"""FilterSets shared by the gateway's API and pages."""

from __future__ import annotations

import django_filters

from gateway.models import AccessKey, Alias, UsageDay


class AccessKeyFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains", label="Name contains")
    active = django_filters.BooleanFilter(method="filter_active")

    class Meta:
        model = AccessKey
        fields = ["name", "active"]

    def filter_active(self, queryset, name, value):  # type: ignore[no-untyped-def]
        usable = AccessKey.objects.usable().values("pk")
        return queryset.filter(pk__in=usable) if value else queryset.exclude(pk__in=usable)


class AliasFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains", label="Name contains")
    deployment = django_filters.CharFilter(
        field_name="targets__deployment__name", label="Routes to deployment", distinct=True
    )

    class Meta:
        model = Alias
        fields = ["name", "deployment"]


class UsageFilterSet(django_filters.FilterSet):
    key = django_filters.ModelChoiceFilter(queryset=AccessKey.objects.all())
    deployment = django_filters.CharFilter()
    since = django_filters.DateFilter(field_name="day", lookup_expr="gte", label="From (day)")
    until = django_filters.DateFilter(field_name="day", lookup_expr="lte", label="To (day)")

    class Meta:
        model = UsageDay
        fields = ["key", "deployment", "since", "until"]
