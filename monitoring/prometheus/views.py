"""Prometheus exposition and service discovery (API), and the console's alerts (pages)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from prometheus_client import REGISTRY, generate_latest
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.choices import Role
from core.views.mixins import require_role
from monitoring import alerts, service_discovery, snapshot
from monitoring.prometheus.access import AUTHENTICATION, ScrapePermission
from monitoring.prometheus.collectors import FLEET_REGISTRY

# The classic text format every Prometheus reads (2.x included).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

TargetGroups = inline_serializer(
    "PrometheusTargetGroup",
    fields={
        "targets": serializers.ListField(child=serializers.CharField()),
        "labels": serializers.DictField(child=serializers.CharField()),
    },
    many=True,
)


class PrometheusMetricsView(APIView):
    """The control plane's metrics in Prometheus' text format."""

    authentication_classes = AUTHENTICATION
    permission_classes = [ScrapePermission]

    @extend_schema(
        summary="Prometheus metrics of the control plane",
        description=(
            "Prometheus text exposition (format 0.0.4): nodes, replicas, deployments, jobs, "
            "rollouts, queue depths, reconcile and task durations, and the process' own "
            "metrics. Send the scrape token (FLEET_PROMETHEUS_TOKEN) or a personal API token "
            "as a bearer token, or scrape from a network in FLEET_PROMETHEUS_ALLOWED_NETWORKS."
        ),
        responses={(200, "text/plain"): OpenApiTypes.STR},
    )
    def get(self, request: Request) -> HttpResponse:
        body = generate_latest(REGISTRY) + generate_latest(FLEET_REGISTRY)
        return HttpResponse(body, content_type=CONTENT_TYPE)


class PrometheusTargetsView(APIView):
    """Prometheus HTTP service discovery: every running replica's metrics endpoint."""

    authentication_classes = AUTHENTICATION
    permission_classes = [ScrapePermission]

    @extend_schema(
        summary="Prometheus HTTP service discovery of the replicas' metrics endpoints",
        description=(
            "A list of target groups as Prometheus' http_sd_configs expects: one per running "
            "replica whose runtime exposes metrics, labelled deployment, revision, node, "
            "runtime, model, variant, replica, slot and __metrics_path__."
        ),
        responses={200: TargetGroups},
    )
    def get(self, request: Request) -> Response:
        return Response(service_discovery.targets())


class AlertsView(APIView):
    """The console's active alerts (the same conditions as the Prometheus rules)."""

    @extend_schema(
        summary="Active alerts",
        responses={
            200: inline_serializer(
                "ActiveAlerts",
                fields={
                    "evaluated_at": serializers.DateTimeField(),
                    "alerts": inline_serializer(
                        "ActiveAlert",
                        fields={
                            "rule": serializers.CharField(),
                            "severity": serializers.CharField(),
                            "state": serializers.CharField(),
                            "labels": serializers.DictField(child=serializers.CharField()),
                            "summary": serializers.CharField(),
                            "detail": serializers.CharField(),
                            "since": serializers.DateTimeField(allow_null=True),
                            "link": serializers.CharField(),
                            "hold_seconds": serializers.FloatField(),
                        },
                        many=True,
                    ),
                },
            )
        },
    )
    def get(self, request: Request) -> Response:
        fleet = snapshot.take()
        active = alerts.active_alerts(fleet)
        return Response(
            {
                "evaluated_at": fleet.taken_at.isoformat(),
                "alerts": [alert.to_json() for alert in active],
            }
        )


# --- Pages ---------------------------------------------------------------------------------
def _context() -> dict[str, object]:
    fleet = snapshot.take()
    active = alerts.active_alerts(fleet)
    return {
        "alerts": active,
        "firing": sum(1 for a in active if a.state == "firing"),
        "evaluated_at": fleet.taken_at,
        "rules": alerts.RULES,
    }


def alerts_page(request: HttpRequest) -> HttpResponse:
    require_role(request, Role.VIEWER)
    return render(request, "monitoring/alerts.html", {"title": "Alerts", **_context()})


alerts_page.nav_section = "alerts"  # type: ignore[attr-defined]


def alerts_list(request: HttpRequest) -> HttpResponse:
    """The list alone (the page refreshes it with HTMX)."""
    require_role(request, Role.VIEWER)
    return render(request, "monitoring/alerts_list.html", _context())


def alerts_badge(request: HttpRequest) -> HttpResponse:
    """The number of firing alerts for the navigation (HTMX, every 30 s)."""
    require_role(request, Role.VIEWER)
    return render(request, "monitoring/alerts_badge.html", _context())
