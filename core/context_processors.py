from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

NAVIGATION = [
    ("overview", "Overview"),
    ("catalog", "Catalog"),
    ("nodes", "Nodes"),
    ("jobs", "Jobs"),
    ("deployments", "Deployments"),
    ("gateway", "Gateway"),
    ("benchmarks", "Benchmarks"),
    ("alerts", "Alerts"),
    ("history", "History"),
    ("settings", "Settings"),
]


def console(request: HttpRequest) -> dict[str, Any]:
    match = getattr(request, "resolver_match", None)
    section = ""
    if match is not None and match.url_name:
        section = getattr(match.func, "nav_section", "") or (match.url_name or "").split("-")[0]
    user = getattr(request, "user", None)
    return {
        "nav_items": NAVIGATION,
        "nav_section": section,
        "fleet_version": settings.FLEET_VERSION,
        "can_operate": bool(user and getattr(user, "has_role", None) and user.has_role("operator")),
        "is_fleet_admin": bool(user and getattr(user, "is_fleet_admin", False)),
    }
