from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def billions(value: int | None) -> str:
    """1235814400 -> '1.24 B'; smaller counts in millions or thousands ('4.6 M', '541.3 K')."""
    if value is None:
        return "—"
    if value >= 1e9:
        return f"{value / 1e9:.2f} B"
    if value >= 1e6:
        return f"{value / 1e6:.1f} M"
    return f"{value / 1e3:.1f} K"


@register.filter
def gb(value: int | None) -> str:
    """Bytes as decimal gigabytes with one decimal ('5.1 GB'), as the fits-on reasons say."""
    if value is None:
        return "—"
    if value < 1e6:
        return f"{value / 1e3:.1f} KB"
    if value < 1e8:
        return f"{value / 1e6:.1f} MB"
    return f"{value / 1e9:.2f} GB"
