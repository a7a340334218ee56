"""The overview's gateway figures and the "try it" step (core/overview.py)."""

from __future__ import annotations

from core.overview import Step, Tile
from deployments import queries
from deployments.models import Deployment
from gateway.live import fleet_figures
from gateway.models import UsageDay


def tiles() -> list[Tile]:
    figures = fleet_figures()
    rows = figures["deployments"]
    rate = sum(row["requests_per_s"] for row in rows)
    errors = sum(row["errors_per_s"] for row in rows)
    if figures["problem"]:
        hint, tone = figures["problem"], "bad"
    elif not figures["processes"]:
        hint, tone = "no gateway process has reported in the last minute", ""
    else:
        hint = f"{errors:.2f} errors/s" if errors else "no errors"
        tone = "bad" if errors else ""
    return [Tile("gateway", "Gateway requests/s", f"{rate:.1f}", "/gateway/", hint, tone)]


def steps() -> list[Step]:
    active = Deployment.objects.filter(deletion_requested_at=None)
    serving = next(
        (d for d in queries.deployments(active) if d.status == "available"),  # type: ignore[attr-defined]
        None,
    )
    return [
        Step(
            "try",
            "Send it a prompt from its page, or through the gateway's /v1/ with an access key.",
            f"/deployments/{serving.pk}/#try-it" if serving else "/deployments/",
            "Try it",
            done=UsageDay.objects.exists(),
        )
    ]
