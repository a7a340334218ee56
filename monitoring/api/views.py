"""Metrics API: agents send batches; people read chart snapshots (the pages resync from them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.choices import Role
from deployments.models import Deployment
from fleet.authentication import IsNode, NodeCredentialAuthentication
from fleet.models import Node
from monitoring import live
from monitoring.api.serializers import (
    MetricsAnswerSerializer,
    SnapshotQuerySerializer,
    SnapshotSerializer,
)
from monitoring.ingest import store
from monitoring.queries import Selection, snapshot
from monitoring.receive import Answer, parse


class AgentMetricsView(APIView):
    """A node agent's batch of metric samples (the ASGI fast path serves the same path)."""

    authentication_classes = [NodeCredentialAuthentication]
    permission_classes = [IsNode]

    @extend_schema(
        request={"application/json": {"type": "object"}},
        responses={200: MetricsAnswerSerializer, 400: dict, 413: dict},
        summary="Send metric samples (node agents; see docs/monitoring.md for the body)",
    )
    def post(self, request: Request) -> Response:
        node = request.auth
        assert isinstance(node, Node)
        parsed = parse(node.pk, request.body)
        if isinstance(parsed, Answer):
            return Response(parsed.body, status=parsed.status)
        with transaction.atomic():
            (answer,), points = store([parsed])
            transaction.on_commit(lambda: live.publish(points))
        return Response(answer.body())


class MetricsSnapshotView(APIView):
    """Chart series of a deployment, a node or the fleet overview, with their points."""

    read_role = Role.VIEWER

    @extend_schema(
        parameters=[SnapshotQuerySerializer],
        responses=SnapshotSerializer,
        summary="Chart series and points (what the live pages load and resync from)",
    )
    def get(self, request: Request) -> Response:
        query = SnapshotQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        deployment_id, node_id = params.get("deployment"), params.get("node")
        if deployment_id and not Deployment.objects.filter(pk=deployment_id).exists():
            raise Http404("No such deployment.")
        if node_id and not Node.objects.filter(pk=node_id).exists():
            raise Http404("No such node.")
        now = datetime.now(UTC)
        since = now - timedelta(seconds=params["window"])
        if params.get("since_ms") is not None:
            since = max(since, datetime.fromtimestamp(params["since_ms"] / 1000, tz=UTC))
        selection = Selection(
            deployment_id=deployment_id,
            node_id=node_id,
            fleet=bool(params.get("fleet")),
            names=params["names"],
        )
        return Response(snapshot(selection, since=since, until=now))
