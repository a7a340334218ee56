"""Agent endpoint for replicas: a node reports the state of one of its replica containers.

Node credential only, and a node sees only its own replicas: another node's replica (or an
unknown id) answers 404. The report is applied by :mod:`deployments.replica_reports`, which
ignores stale or duplicate reports, and nudges a reconcile pass.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from deployments.replica_reports import apply_replica_report
from fleet.authentication import IsNode, NodeCredentialAuthentication
from fleet.models import Node


class ReplicaStatusSerializer(serializers.Serializer[Any]):
    state = serializers.ChoiceField(choices=("starting", "healthy", "failed", "stopped"))
    container_id = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=64
    )
    error = serializers.CharField(required=False, allow_blank=True, default="", max_length=8000)
    restarts = serializers.IntegerField(required=False, min_value=0, default=0)


class AgentReplicaStatusView(APIView):
    authentication_classes = [NodeCredentialAuthentication]
    permission_classes = [IsNode]

    @extend_schema(
        request=ReplicaStatusSerializer,
        responses={
            200: inline_serializer(
                "ReplicaStatusAnswer",
                {"state": serializers.CharField(), "reason": serializers.CharField()},
            ),
            404: dict,
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        serializer = ReplicaStatusSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        node = request.auth
        assert isinstance(node, Node)
        replica = apply_replica_report(node, pk, dict(serializer.validated_data))
        if replica is None:
            return Response(
                {"detail": "No such replica on this node.", "code": "not_found"},
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response({"state": replica.state, "reason": replica.reason})
