"""/api/v1/benchmarks/…: profiles, suites, runs (start, cancel, compare, export)."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from benchmarks import export, services
from benchmarks.api.serializers import (
    BenchmarkRunCreateSerializer,
    BenchmarkRunSerializer,
    ProfileSerializer,
    ProfileUpdateSerializer,
    ProfileWriteSerializer,
    RunActionSerializer,
    SuiteRunCreateSerializer,
    SuiteRunSerializer,
    SuiteSerializer,
    SuiteUpdateSerializer,
    SuiteWriteSerializer,
)
from benchmarks.models import BenchmarkProfile, BenchmarkRun, SuiteRun, TestSuite
from core import job_services
from core.api.base import FleetModelViewSet, expected_version
from core.choices import Role
from core.errors import ServiceError
from deployments.models import Deployment


def _targets(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("deployment"):
        deployment = Deployment.objects.filter(name=data["deployment"]).first()
        if deployment is None:
            raise ServiceError(f"No deployment named {data['deployment']!r}.", field="deployment")
        return {"deployment": deployment}
    return {"replicas": services.replicas_by_ids(data["replicas"])}


class ProfileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Saved, named benchmark profiles: concurrency levels or request rates, token lengths
    or a prompt set, streamed or not, warm-up, duration or request count per level."""

    queryset = BenchmarkProfile.objects.select_related("created_by")
    serializer_class = ProfileSerializer
    ordering_fields = ["name", "created_at"]
    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    @extend_schema(request=ProfileWriteSerializer, responses={201: ProfileSerializer})
    def create(self, request: Request) -> Response:
        data, ctx = self.validated(ProfileWriteSerializer)
        profile = services.create_profile(ctx, **data)
        return Response(ProfileSerializer(profile).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=ProfileUpdateSerializer,
        responses=ProfileSerializer,
        summary="Change a profile (send If-Match); runs keep the spec they ran with",
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        serializer = ProfileUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        ctx = self.change_context(data.pop("reason", ""))
        profile = services.update_profile(
            ctx, self.get_object(), expected_version=expected_version(request), **data
        )
        return Response(ProfileSerializer(profile).data)

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        services.delete_profile(self.change_context(), self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class SuiteViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Model test suites: cases (prompt or messages, sampling, a check) judged per answer."""

    queryset = TestSuite.objects.select_related("created_by")
    serializer_class = SuiteSerializer
    ordering_fields = ["name", "created_at"]
    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    @extend_schema(request=SuiteWriteSerializer, responses={201: SuiteSerializer})
    def create(self, request: Request) -> Response:
        data, ctx = self.validated(SuiteWriteSerializer)
        suite = services.create_suite(ctx, **data)
        return Response(SuiteSerializer(suite).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=SuiteUpdateSerializer, responses=SuiteSerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        serializer = SuiteUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        ctx = self.change_context(data.pop("reason", ""))
        suite = services.update_suite(
            ctx, self.get_object(), expected_version=expected_version(request), **data
        )
        return Response(SuiteSerializer(suite).data)

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        services.delete_suite(self.change_context(), self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class _RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    read_role = Role.VIEWER
    write_role = Role.OPERATOR
    ordering_fields = ["created_at"]

    @extend_schema(
        request=RunActionSerializer,
        summary="Cancel the run: it stops within a second; finished levels are kept",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        _, ctx = self.validated(RunActionSerializer)
        job_services.request_cancel(ctx, run.job)
        run.refresh_from_db()
        run.job.refresh_from_db()
        return Response(self.get_serializer(run).data)


IDS = OpenApiParameter("ids", OpenApiTypes.STR, description="Run ids, comma-separated.")
FILE = OpenApiParameter(
    "file", OpenApiTypes.STR, enum=["json", "csv"], description="json (default) or csv."
)


class BenchmarkRunViewSet(_RunViewSet):
    """Benchmark runs: per level TTFT, inter-token and end-to-end latency (p50/p90/p99),
    tokens/s, requests/s, errors, what the replicas used, and the generator's own CPU."""

    queryset = BenchmarkRun.objects.select_related("job")
    serializer_class = BenchmarkRunSerializer

    def get_queryset(self) -> QuerySet[BenchmarkRun]:
        queryset = super().get_queryset()
        deployment = self.request.query_params.get("deployment")
        return queryset.filter(deployment_name=deployment) if deployment else queryset

    @extend_schema(request=BenchmarkRunCreateSerializer, responses={201: BenchmarkRunSerializer})
    def create(self, request: Request) -> Response:
        data, ctx = self.validated(BenchmarkRunCreateSerializer)
        profile = BenchmarkProfile.objects.filter(name=data["profile"]).first()
        if profile is None:
            raise ServiceError(f"No benchmark profile named {data['profile']!r}.", field="profile")
        run = services.start_benchmark(ctx, profile, **_targets(data))
        run = BenchmarkRun.objects.select_related("job").get(pk=run.pk)
        return Response(BenchmarkRunSerializer(run).data, status=status.HTTP_201_CREATED)

    def _picked(self, request: Request) -> list[BenchmarkRun]:
        raw = request.query_params.get("ids", "")
        try:
            ids = [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            raise ServiceError(
                "ids are run numbers, comma-separated: ?ids=3,4.", field="ids"
            ) from None
        if not ids:
            raise ServiceError("Name the runs: ?ids=3,4.", field="ids")
        runs = {r.pk: r for r in self.get_queryset().filter(pk__in=ids)}
        missing = [i for i in ids if i not in runs]
        if missing:
            raise ServiceError(f"No benchmark run {missing[0]}.", field="ids")
        return [runs[i] for i in ids]

    @extend_schema(
        parameters=[IDS],
        responses=OpenApiTypes.OBJECT,
        summary="Two or more runs side by side: flat rows and plot series",
    )
    @action(detail=False, methods=["get"])
    def compare(self, request: Request) -> Response:
        runs = self._picked(request)
        return Response(
            {
                "runs": BenchmarkRunSerializer(runs, many=True).data,
                "rows": [row for run in runs for row in export.rows(run)],
                "series": export.series(runs),
            }
        )

    @extend_schema(
        parameters=[IDS, FILE],
        responses={(200, "text/csv"): OpenApiTypes.STR},
        summary="Download runs' figures as JSON or CSV",
    )
    @action(detail=False, methods=["get"])
    def export(self, request: Request) -> HttpResponse:
        runs = self._picked(request)
        names = "-".join(str(r.pk) for r in runs)
        if request.query_params.get("file") == "csv":
            response = HttpResponse(export.csv_text(runs), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="benchmarks-{names}.csv"'
            return response
        body = json.dumps(BenchmarkRunSerializer(runs, many=True).data, indent=2, default=str)
        response = HttpResponse(body, content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="benchmarks-{names}.json"'
        return response


class SuiteRunViewSet(_RunViewSet):
    """Test-suite runs: each case's answer, pass or fail and why; the pass rate per target."""

    queryset = SuiteRun.objects.select_related("job")
    serializer_class = SuiteRunSerializer

    @extend_schema(request=SuiteRunCreateSerializer, responses={201: SuiteRunSerializer})
    def create(self, request: Request) -> Response:
        data, ctx = self.validated(SuiteRunCreateSerializer)
        suite = TestSuite.objects.filter(name=data["suite"]).first()
        if suite is None:
            raise ServiceError(f"No test suite named {data['suite']!r}.", field="suite")
        run = services.start_suite(ctx, suite, **_targets(data))
        run = SuiteRun.objects.select_related("job").get(pk=run.pk)
        return Response(SuiteRunSerializer(run).data, status=status.HTTP_201_CREATED)
