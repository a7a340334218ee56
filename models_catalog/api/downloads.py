"""Downloads API: put a variant on nodes, cache it in the fleet store, per-node inventory.

- ``POST /api/v1/downloads/`` ``{variant, nodes: [ids], source}`` → the node jobs (202);
- ``POST /api/v1/downloads/cache/`` ``{variant}`` → the cache job (202);
- ``/api/v1/node-models/``: what each node holds (list/retrieve), ``PATCH {pinned}``, and
  ``DELETE`` to remove the variant's files from the node (refused while pinned, while a
  download for it runs, or while a running replica uses it).
"""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.base import FleetModelViewSet, FleetViewSetMixin, ReasonField, validated_data
from core.api.jobs import JobSerializer
from core.choices import Role
from fleet.models import Node
from models_catalog import downloads
from models_catalog.models import NodeModel, Variant


class PutOnNodesSerializer(serializers.Serializer[Any]):
    variant = serializers.PrimaryKeyRelatedField(queryset=Variant.objects.select_related("model"))
    nodes = serializers.PrimaryKeyRelatedField(
        queryset=Node.objects.all(), many=True, allow_empty=False
    )
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=downloads.SOURCES,
        default=downloads.SOURCE_MIRROR,
        help_text=(
            "mirror (default): the control plane caches the files once and nodes fetch them "
            "from its /hub/ mirror. upstream: each node fetches from the upstream hub itself "
            "(needs internet access on every node; the model's token is sent to the nodes)."
        ),
    )
    reason = ReasonField()


class CacheSerializer(serializers.Serializer[Any]):
    variant = serializers.PrimaryKeyRelatedField(queryset=Variant.objects.select_related("model"))
    reason = ReasonField()


class DownloadsView(FleetViewSetMixin, APIView):
    """Put a variant on nodes: one download job per node, run by the node's agent."""

    read_role = Role.OPERATOR
    write_role = Role.OPERATOR

    @extend_schema(
        request=PutOnNodesSerializer,
        responses={202: JobSerializer(many=True)},
        summary="Put a variant on nodes (one job per node; present ones finish at once)",
    )
    def post(self, request: Request) -> Response:
        data = validated_data(PutOnNodesSerializer, request)
        ctx = self.change_context(data.pop("reason", ""))
        jobs = downloads.put_variant_on_nodes(
            ctx, data["variant"], data["nodes"], source=data["source"]
        )
        for job in jobs:
            job.refresh_from_db()
        return Response(JobSerializer(jobs, many=True).data, status=status.HTTP_202_ACCEPTED)


class CacheView(FleetViewSetMixin, APIView):
    """Fetch a variant's files from the upstream hub into the fleet store (a job)."""

    read_role = Role.OPERATOR
    write_role = Role.OPERATOR

    @extend_schema(
        request=CacheSerializer,
        responses={202: JobSerializer},
        summary="Cache a variant in the fleet store (finishes at once when it is there)",
    )
    def post(self, request: Request) -> Response:
        data = validated_data(CacheSerializer, request)
        ctx = self.change_context(data.pop("reason", ""))
        job = downloads.cache_variant(ctx, data["variant"])
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class NodeModelSerializer(serializers.ModelSerializer[NodeModel]):
    node_name = serializers.CharField(source="node.name", read_only=True)
    variant_name = serializers.CharField(source="variant.name", read_only=True)
    repo_id = serializers.CharField(source="variant.model.repo_id", read_only=True)
    format = serializers.CharField(source="variant.format", read_only=True)

    class Meta:
        model = NodeModel
        fields = [
            "id",
            "node",
            "node_name",
            "variant",
            "variant_name",
            "repo_id",
            "format",
            "commit_sha",
            "state",
            "size",
            "verified_at",
            "pinned",
            "updated_at",
        ]
        read_only_fields = fields


class NodeModelUpdateSerializer(serializers.Serializer[Any]):
    pinned = serializers.BooleanField()
    reason = ReasonField()


class NodeModelFilterSet(django_filters.FilterSet):
    node = django_filters.NumberFilter(field_name="node_id")
    node_name = django_filters.CharFilter(field_name="node__name")
    variant = django_filters.NumberFilter(field_name="variant_id")
    model = django_filters.NumberFilter(field_name="variant__model_id")
    repo_id = django_filters.CharFilter(field_name="variant__model__repo_id")
    state = django_filters.ChoiceFilter(choices=NodeModel.State.choices)
    pinned = django_filters.BooleanFilter()

    class Meta:
        model = NodeModel
        fields = ["node", "node_name", "variant", "model", "repo_id", "state", "pinned"]


class NodeModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Which variant is on which node: revision, size, when verified, pinned or not."""

    queryset = NodeModel.objects.select_related("node", "variant__model")
    serializer_class = NodeModelSerializer
    filterset_class = NodeModelFilterSet
    ordering_fields = ["updated_at", "size", "verified_at"]
    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    @extend_schema(request=NodeModelUpdateSerializer, responses=NodeModelSerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        placed = self.get_object()
        data, ctx = self.validated(NodeModelUpdateSerializer)
        placed = downloads.set_pinned(ctx, placed, data["pinned"])
        return Response(NodeModelSerializer(placed).data)

    @extend_schema(
        responses={202: None},
        summary="Delete the variant's files from the node (409 while pinned, downloading or used)",
    )
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        downloads.delete_from_node(self.change_context(), self.get_object())
        return Response(status=status.HTTP_202_ACCEPTED)
