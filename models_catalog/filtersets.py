"""Filters shared by the catalog API and pages."""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from models_catalog.choices import SizeTier, VariantFormat
from models_catalog.models import CatalogModel, Variant

# Parameter ranges per tier, matching models_catalog.models.size_tier (lower bound inclusive).
TIER_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    SizeTier.TINY: (None, 0.1e9),
    SizeTier.MICRO: (0.1e9, 1.45e9),
    SizeTier.SMALL: (1.45e9, 13.95e9),
    SizeTier.MEDIUM: (13.95e9, 30e9 + 1),
    SizeTier.LARGE: (30e9 + 1, None),
}


class CatalogModelFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_q", label="Search")
    tier = django_filters.ChoiceFilter(
        choices=SizeTier.choices, method="filter_tier", label="Size tier"
    )
    format = django_filters.ChoiceFilter(
        choices=VariantFormat.choices, method="filter_format", label="Has format"
    )
    licence = django_filters.CharFilter(field_name="licence", lookup_expr="iexact")

    class Meta:
        model = CatalogModel
        fields = ["q", "tier", "format", "licence"]

    def filter_q(self, queryset: QuerySet[CatalogModel], name: str, value: str) -> QuerySet:
        return queryset.filter(
            Q(repo_id__icontains=value)
            | Q(architecture__icontains=value)
            | Q(tags__contains=[value])
        )

    def filter_tier(self, queryset: QuerySet[CatalogModel], name: str, value: str) -> QuerySet:
        low, high = TIER_BOUNDS[value]
        if low is not None:
            queryset = queryset.filter(parameter_count__gte=low)
        if high is not None:
            queryset = queryset.filter(parameter_count__lt=high)
        return queryset.filter(parameter_count__isnull=False)

    def filter_format(self, queryset: QuerySet[CatalogModel], name: str, value: str) -> QuerySet:
        return queryset.filter(pk__in=Variant.objects.filter(format=value).values("model_id"))


class VariantFilterSet(django_filters.FilterSet):
    format = django_filters.ChoiceFilter(choices=VariantFormat.choices)
    quantization = django_filters.CharFilter(lookup_expr="iexact")

    class Meta:
        model = Variant
        fields = ["model", "format", "quantization"]
