"""Overview and the shared pages of the console."""

from __future__ import annotations

from datetime import timedelta

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from core import overview as overview_figures
from core.models import ApiToken, HistoryEvent, Secret, User


def overview(request: HttpRequest) -> HttpResponse:
    since = timezone.now() - timedelta(hours=24)
    counts = {
        "users": User.objects.filter(is_active=True).count(),
        "tokens": ApiToken.objects.usable().count(),
        "secrets": Secret.objects.count(),
        "changes_24h": HistoryEvent.objects.filter(occurred_at__gte=since).count(),
    }
    recent = HistoryEvent.objects.all()[:10]
    return render(
        request,
        "core/overview.html",
        {
            "counts": counts,
            "recent": recent,
            "tiles": overview_figures.tiles(),
            "steps": overview_figures.steps(),
        },
    )


def jobs(request: HttpRequest) -> HttpResponse:
    from core.views.jobs import job_list

    return job_list(request)
