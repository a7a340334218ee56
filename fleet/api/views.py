from __future__ import annotations

import shlex
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from core.api.base import FleetModelViewSet, expected_version, validated_data
from core.choices import Role
from core.errors import check_version
from fleet import services
from fleet.api.serializers import (
    AgentJoinedSerializer,
    AgentJoinSerializer,
    CommandResultSerializer,
    JoinTokenCreatedSerializer,
    JoinTokenCreateSerializer,
    JoinTokenSerializer,
    NodeCommandSerializer,
    NodeDetailSerializer,
    NodeSerializer,
    NodeUpdateSerializer,
)
from fleet.authentication import IsNode, NodeCredentialAuthentication
from fleet.choices import CommandKind
from fleet.filtersets import NodeFilterSet
from fleet.heartbeats import handle_heartbeat, too_large
from fleet.models import JoinToken, Node, NodeCommand


def agent_command(server_url: str, join_key: str, name: str = "NODE-NAME") -> str:
    """The exact command an operator runs on a host to join it."""
    return " ".join(
        [
            "python manage.py fleet_agent",
            f"--server {shlex.quote(server_url)}",
            f"--join-token {shlex.quote(join_key)}",
            f"--name {name}",
            "--data-dir /var/lib/slm-fleet-agent",
        ]
    )


def server_url(request: HttpRequest) -> str:
    return str(
        getattr(settings, "FLEET_PUBLIC_URL", "") or request.build_absolute_uri("/").rstrip("/")
    )


class NodeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Hosts running the agent: state, inventory, labels and operator flags."""

    queryset = Node.objects.all()
    serializer_class = NodeSerializer
    filterset_class = NodeFilterSet
    ordering_fields = ["name", "last_heartbeat_at", "joined_at"]
    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    def get_serializer_class(self) -> Any:
        return NodeDetailSerializer if self.action == "retrieve" else NodeSerializer

    @extend_schema(request=NodeUpdateSerializer, responses=NodeDetailSerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        node = self.get_object()
        data, ctx = self.validated(NodeUpdateSerializer)
        node = services.update_node(ctx, node, expected_version=expected_version(request), **data)
        return Response(NodeDetailSerializer(node).data)

    @extend_schema(summary="Delete a node (its credential stops working at once)")
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        node = self.get_object()
        check_version(node.version, expected_version(request), f"Node {node.name}")
        services.delete_node(self.change_context(), node)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=None, responses=NodeDetailSerializer, summary="Rotate the node credential"
    )
    @action(detail=True, methods=["post"], url_path="rotate-credential")
    def rotate_credential(self, request: Request, pk: str | None = None) -> Response:
        node = services.rotate_credential(self.change_context(), self.get_object())
        return Response(NodeDetailSerializer(node).data)

    @extend_schema(
        request=None,
        responses={202: NodeCommandSerializer},
        summary="Send a probe: the agent answers with engine info and its clock",
    )
    @action(detail=True, methods=["post"])
    def probe(self, request: Request, pk: str | None = None) -> Response:
        command = services.send_command(self.change_context(), self.get_object(), CommandKind.PROBE)
        return Response(NodeCommandSerializer(command).data, status=status.HTTP_202_ACCEPTED)


class NodeCommandViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Orders sent to node agents, with their answers."""

    queryset = NodeCommand.objects.select_related("node")
    serializer_class = NodeCommandSerializer
    filterset_fields = ["node", "kind", "state"]
    ordering_fields = ["created_at"]
    read_role = Role.VIEWER


class JoinTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Tokens that let agents join. The key is shown once, with the command to run."""

    queryset = JoinToken.objects.select_related("created_by")
    serializer_class = JoinTokenSerializer
    ordering_fields = ["created_at", "expires_at", "name"]
    read_role = Role.OPERATOR
    write_role = Role.OPERATOR

    @extend_schema(request=JoinTokenCreateSerializer, responses={201: JoinTokenCreatedSerializer})
    def create(self, request: Request) -> Response:
        data, ctx = self.validated(JoinTokenCreateSerializer)
        token, key = services.create_join_token(ctx, **data)
        token.key = key  # type: ignore[attr-defined]
        token.command = agent_command(server_url(request), key)  # type: ignore[attr-defined]
        return Response(JoinTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Revoke a join token (nodes that joined with it stay)")
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        services.revoke_join_token(self.change_context(), self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class JoinThrottle(AnonRateThrottle):
    rate = "30/min"


class AgentJoinView(APIView):
    """An agent registers with a join token and receives its node credential (shown once)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes = [JoinThrottle]

    @extend_schema(request=AgentJoinSerializer, responses={201: AgentJoinedSerializer}, auth=[])
    def post(self, request: Request) -> Response:
        data = validated_data(AgentJoinSerializer, request)
        node, credential = services.join_node(
            join_key=data["join_token"], name=data["name"], inventory=data["inventory"]
        )
        body = {
            "node_id": node.pk,
            "name": node.name,
            "credential": credential,
            "queue": node.queue,
            "broker_url": settings.FLEET_AGENT_BROKER_URL,
            "broker_transport_options": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
            "heartbeat_interval_seconds": settings.FLEET_HEARTBEAT_INTERVAL_SECONDS,
            "command_ttl_seconds": settings.FLEET_COMMAND_TTL_SECONDS,
        }
        return Response(AgentJoinedSerializer(body).data, status=status.HTTP_201_CREATED)


class AgentHeartbeatView(APIView):
    """Inventory and liveness from an agent (production servers take the ASGI fast path)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]  # the node credential is checked with the batch

    @extend_schema(
        request={"application/json": {"type": "object"}},
        responses={200: OpenApiResponse(description="Accepted; may carry new_credential")},
        auth=[{"nodeCredential": []}],  # type: ignore[list-item]
    )
    def post(self, request: Request) -> Response:
        parts = request.headers.get("Authorization", "").split()
        credential = parts[1] if len(parts) == 2 and parts[0].lower() == "bearer" else None
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
            too_big = declared > settings.FLEET_HEARTBEAT_MAX_BYTES
            body = b"" if too_big else request.body
        except (ValueError, RequestDataTooBig):
            too_big, body = True, b""
        result = (
            too_large()
            if too_big
            else handle_heartbeat(
                credential, body, timezone.now(), getattr(request, "request_id", "")
            )
        )
        response = Response(result.body, status=result.status)
        if result.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="agent"'
        return response


class AgentCommandResultView(APIView):
    """An agent reports the outcome of a command it ran."""

    authentication_classes = [NodeCredentialAuthentication]
    permission_classes = [IsNode]

    @extend_schema(request=CommandResultSerializer, responses=NodeCommandSerializer)
    def post(self, request: Request, pk: int) -> Response:
        data = validated_data(CommandResultSerializer, request)
        node = request.auth
        assert isinstance(node, Node)
        command = services.complete_command(node, pk, result=data["result"], error=data["error"])
        return Response(NodeCommandSerializer(command).data)
