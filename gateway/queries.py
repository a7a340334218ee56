"""Read-side queries shared by the gateway's API and pages."""

from __future__ import annotations

from django.db.models import QuerySet, Sum
from django.db.models.functions import Coalesce

from gateway.models import AccessKey, Alias, UsageDay


def keys() -> QuerySet[AccessKey]:
    return AccessKey.objects.select_related("created_by")


def aliases() -> QuerySet[Alias]:
    return Alias.objects.prefetch_related("targets__deployment")


def usage() -> QuerySet[UsageDay]:
    return UsageDay.objects.select_related("key")


def usage_totals(rows: QuerySet[UsageDay]) -> dict[str, int]:
    """Requests, errors and tokens summed over ``rows`` (one query)."""
    sums = rows.order_by().aggregate(
        requests=Coalesce(Sum("requests"), 0),
        errors=Coalesce(Sum("errors"), 0),
        prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
        completion_tokens=Coalesce(Sum("completion_tokens"), 0),
    )
    totals = {name: int(value) for name, value in sums.items()}
    totals["total_tokens"] = totals["prompt_tokens"] + totals["completion_tokens"]
    return totals
