"""``{% load monitoring_charts %}{% metrics_charts "deployment" deployment.pk %}``."""

from __future__ import annotations

from typing import Any

from django import template

from monitoring.charts import chart_context

register = template.Library()


@register.inclusion_tag("monitoring/_charts.html")
def metrics_charts(kind: str, pk: int | None = None) -> dict[str, Any]:
    return chart_context(kind, pk)
