from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.base import FleetModelViewSet, expected_version
from core.choices import Role
from deployments import autoscaler, logs, queries, services, try_it
from deployments.api.serializers import (
    AutoscalingStatusSerializer,
    DeploymentCreateSerializer,
    DeploymentDetailSerializer,
    DeploymentSerializer,
    DeploymentUpdateSerializer,
    LogsCommandSerializer,
    LogsRequestSerializer,
    ReasonSerializer,
    ReplicaLogsSerializer,
    ReplicaSerializer,
    RevisionSerializer,
    RollbackSerializer,
    RolloutSerializer,
    ScaleSerializer,
    TryRequestSerializer,
    TryResultSerializer,
)
from deployments.filtersets import DeploymentFilterSet, ReplicaFilterSet, RolloutFilterSet
from deployments.models import Deployment, DeploymentRevision, Replica, Rollout
from deployments.spec import SpecError


def _spec_errors(error: SpecError) -> serializers.ValidationError:
    """Per-field spec problems in the API's usual shape: ``errors.spec.<field>``."""
    return serializers.ValidationError({"spec": error.errors})


class DeploymentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Deployments: a catalog variant served by a runtime on the fleet's nodes, with
    immutable revisions. Changes send If-Match (412 when stale) and an optional reason."""

    queryset = Deployment.objects.all()
    serializer_class = DeploymentSerializer
    filterset_class = DeploymentFilterSet
    ordering_fields = ["name", "created_at"]
    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    def get_queryset(self) -> QuerySet[Deployment]:
        return queries.deployments(super().get_queryset())

    def get_serializer_class(self) -> Any:
        return DeploymentSerializer if self.action == "list" else DeploymentDetailSerializer

    def _detail(self, deployment: Deployment, code: int = status.HTTP_200_OK) -> Response:
        """The answer to a change: the deployment as it is now (the change's pass included)."""
        fresh = queries.deployment(deployment.pk)
        return Response(DeploymentDetailSerializer(fresh).data, status=code)

    @extend_schema(
        request=DeploymentCreateSerializer,
        responses={201: DeploymentDetailSerializer},
        summary="Create a deployment (revision 1 of its spec)",
    )
    def create(self, request: Request) -> Response:
        data, ctx = self.validated(DeploymentCreateSerializer)
        try:
            deployment = services.create_deployment(
                ctx,
                data["name"],
                data["spec"],
                revision_history_limit=data["revision_history_limit"],
            )
        except SpecError as error:
            raise _spec_errors(error) from None
        return self._detail(deployment, status.HTTP_201_CREATED)

    @extend_schema(
        request=DeploymentUpdateSerializer,
        responses=DeploymentDetailSerializer,
        summary="Change the spec (a merge patch; a real change makes a new revision)",
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        deployment = self.get_object()
        data, ctx = self.validated(DeploymentUpdateSerializer)
        try:
            deployment = services.update_spec(
                ctx,
                deployment,
                data["spec"],
                expected_version(request),
                revision_history_limit=data["revision_history_limit"],
            )
        except SpecError as error:
            raise _spec_errors(error) from None
        return self._detail(deployment)

    @extend_schema(
        responses={
            204: OpenApiResponse(description="Deleted (no replica was left)."),
            202: DeploymentDetailSerializer,
        },
        summary="Delete: at once when no replica is left, else stop and delete when they are gone",
    )
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        deployment = self.get_object()
        if services.delete_deployment(self.change_context(), deployment, expected_version(request)):
            return Response(status=status.HTTP_204_NO_CONTENT)
        return self._detail(deployment, status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=ScaleSerializer,
        responses=DeploymentDetailSerializer,
        summary="Set the desired replica count (not a new revision)",
    )
    @action(detail=True, methods=["post"])
    def scale(self, request: Request, pk: str | None = None) -> Response:
        deployment = self.get_object()
        data, ctx = self.validated(ScaleSerializer)
        services.scale(ctx, deployment, data["replicas"], expected_version(request))
        return self._detail(deployment)

    def _state_action(self, service: Any) -> Response:
        deployment = self.get_object()
        _, ctx = self.validated(ReasonSerializer)
        service(ctx, deployment, expected_version(self.request))
        return self._detail(deployment)

    @extend_schema(
        request=ReasonSerializer,
        responses=DeploymentDetailSerializer,
        summary="Pause rollouts where they are (replicas keep serving)",
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        return self._state_action(services.pause)

    @extend_schema(
        request=ReasonSerializer, responses=DeploymentDetailSerializer, summary="Resume rollouts"
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        return self._state_action(services.resume)

    @extend_schema(
        request=ReasonSerializer,
        responses=DeploymentDetailSerializer,
        summary="Stop every replica (the spec, count and revisions are kept)",
    )
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str | None = None) -> Response:
        return self._state_action(services.stop)

    @extend_schema(
        request=ReasonSerializer,
        responses=DeploymentDetailSerializer,
        summary="Start a stopped deployment again",
    )
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        return self._state_action(services.start)

    @extend_schema(
        request=RollbackSerializer,
        responses=DeploymentDetailSerializer,
        summary="Roll back: a new revision with the spec of an earlier, rollback-able one",
    )
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str | None = None) -> Response:
        deployment = self.get_object()
        data, ctx = self.validated(RollbackSerializer)
        services.rollback(ctx, deployment, data["revision"], expected_version(request))
        return self._detail(deployment)

    @extend_schema(
        request=TryRequestSerializer,
        responses=TryResultSerializer,
        summary="Try it: one completion from one serving replica, with timings (operators)",
    )
    @action(detail=True, methods=["post"], url_path="try", url_name="try")
    def try_prompt(self, request: Request, pk: str | None = None) -> Response:
        deployment = self.get_object()
        data, _ = self.validated(TryRequestSerializer)
        result = try_it.try_completion(
            deployment, data["prompt"], data["max_tokens"], replica=data.get("replica")
        )
        return Response(TryResultSerializer(result.to_json()).data)

    @extend_schema(
        request=None,
        responses=AutoscalingStatusSerializer,
        summary="Autoscaling: the policy, the latest decision and the last 15 minutes",
        filters=False,
    )
    @action(detail=True, methods=["get"])
    def autoscaling(self, request: Request, pk: str | None = None) -> Response:
        deployment = self.get_object()
        return Response(AutoscalingStatusSerializer(autoscaler.status(deployment)).data)

    @extend_schema(
        request=None,
        responses=RevisionSerializer(many=True),
        summary="Revisions, newest first, each with its diff against the one before",
        filters=False,
    )
    @action(detail=True, methods=["get"])
    def revisions(self, request: Request, pk: str | None = None) -> Response:
        deployment = self.get_object()
        revisions: QuerySet[DeploymentRevision] = deployment.revisions.select_related(
            "variant__model"
        ).order_by("-number")
        page = self.paginate_queryset(revisions)
        context = {"current_revision_id": deployment.current_revision_id}
        rows = RevisionSerializer(
            page if page is not None else revisions, many=True, context=context
        )
        if page is not None:
            return self.get_paginated_response(rows.data)
        return Response(rows.data)


class ReplicaViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Replicas: one container of a deployment's revision on a node (read-only)."""

    queryset = Replica.objects.select_related("deployment", "revision", "node").order_by(
        "deployment__name", "slot", "-created_at"
    )
    serializer_class = ReplicaSerializer
    filterset_class = ReplicaFilterSet
    ordering_fields = ["created_at", "slot", "state"]
    read_role = Role.VIEWER
    action_roles = {"logs": Role.OPERATOR}  # logs can hold prompts: operators only

    @extend_schema(
        methods=["GET"],
        request=None,
        responses=ReplicaLogsSerializer,
        summary="The replica's kept log lines (operators: logs can hold prompts)",
        filters=False,
    )
    @extend_schema(
        methods=["POST"],
        request=LogsRequestSerializer,
        responses={202: LogsCommandSerializer},
        summary="Fetch the replica's newest log lines from its node (a replica_logs command)",
    )
    @action(detail=True, methods=["get", "post"])
    def logs(self, request: Request, pk: str | None = None) -> Response:
        replica = self.get_object()
        if request.method == "POST":
            data, ctx = self.validated(LogsRequestSerializer)
            command = logs.request_logs(ctx, replica, data["tail"])
            body = {
                "id": command.pk,
                "kind": command.kind,
                "state": command.get_state(),
                "arguments": command.arguments,
                "created_at": command.created_at,
                "expires_at": command.expires_at,
            }
            return Response(LogsCommandSerializer(body).data, status=status.HTTP_202_ACCEPTED)
        logs.collect(replica)
        pending = logs.in_flight(replica)
        body = {
            "replica": replica.pk,
            "lines": logs.kept_lines(replica),
            "fetched_at": replica.logs_fetched_at,
            "pending_command": pending.pk if pending else None,
            "error": logs.last_error(replica),
        }
        return Response(ReplicaLogsSerializer(body).data)


class RolloutViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Rollouts: moving a deployment from one revision to another, in batches (read-only)."""

    queryset = Rollout.objects.select_related("deployment", "from_revision", "to_revision")
    serializer_class = RolloutSerializer
    filterset_class = RolloutFilterSet
    ordering_fields = ["started_at"]
    read_role = Role.VIEWER
