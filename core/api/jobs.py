"""/api/v1/jobs/: every job with its progress; cancel and retry for operators."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core import job_services
from core.api.base import FleetModelViewSet, ReasonField
from core.choices import Role
from core.filtersets import JobFilterSet
from core.jobs import Job


class JobProgressSerializer(serializers.Serializer[Any]):
    stage = serializers.CharField(required=False)
    bytes_done = serializers.IntegerField(required=False)
    bytes_total = serializers.IntegerField(required=False)
    bytes_transferred = serializers.IntegerField(required=False)
    rate_bps = serializers.FloatField(required=False, allow_null=True)
    eta_s = serializers.FloatField(required=False, allow_null=True)
    current_file = serializers.CharField(required=False, allow_blank=True)
    files_done = serializers.IntegerField(required=False)
    files_total = serializers.IntegerField(required=False)
    percent = serializers.FloatField(required=False, allow_null=True)


class JobSerializer(serializers.ModelSerializer[Job]):
    kind_display = serializers.CharField(source="get_kind_display", read_only=True)
    node_name = serializers.CharField(source="node.name", read_only=True, allow_null=True)
    progress = JobProgressSerializer(read_only=True)
    waiting_for = serializers.SerializerMethodField()
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "kind_display",
            "state",
            "node",
            "node_name",
            "target_type",
            "target_id",
            "target_name",
            "progress",
            "error",
            "attempts",
            "max_attempts",
            "cancel_requested",
            "waiting_for",
            "lease_owner",
            "lease_expires_at",
            "actor_type",
            "actor_name",
            "created_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "version",
        ]
        read_only_fields = fields

    def get_waiting_for(self, obj: Job) -> int | None:
        return job_services.waiting_for(obj) if obj.state == "queued" else None


class JobDetailSerializer(JobSerializer):
    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "params", "result", "log_tail"]
        read_only_fields = fields


class JobActionSerializer(serializers.Serializer[Any]):
    reason = ReasonField()


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Jobs (downloads, caching, …): state, progress, outcome and the log tail."""

    queryset = Job.objects.select_related("node")
    serializer_class = JobSerializer
    filterset_class = JobFilterSet
    ordering_fields = ["created_at", "started_at", "finished_at", "state"]
    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    def get_serializer_class(self) -> Any:
        return JobDetailSerializer if self.action == "retrieve" else JobSerializer

    @extend_schema(
        request=JobActionSerializer,
        responses=JobDetailSerializer,
        summary="Cancel: a queued job stops at once, a running one at its next progress report",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        _, ctx = self.validated(JobActionSerializer)
        job = job_services.request_cancel(ctx, self.get_object())
        job.refresh_from_db()
        return Response(JobDetailSerializer(job).data)

    @extend_schema(
        request=JobActionSerializer,
        responses=JobDetailSerializer,
        summary="Retry a failed or cancelled job (fresh attempts; downloads resume)",
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        _, ctx = self.validated(JobActionSerializer)
        job = job_services.retry(ctx, self.get_object())
        job.refresh_from_db()
        return Response(JobDetailSerializer(job).data)
