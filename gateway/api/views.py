"""/api/v1/gateway/…: access keys, aliases, usage and live figures."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.base import FleetModelViewSet, expected_version
from core.choices import Role
from core.errors import check_version
from gateway import live, queries, services
from gateway.api.serializers import (
    AccessKeyCreatedSerializer,
    AccessKeySerializer,
    AccessKeyUpdateSerializer,
    AccessKeyWriteSerializer,
    AliasCreateSerializer,
    AliasSerializer,
    AliasUpdateSerializer,
    KeyReasonSerializer,
    LiveSerializer,
    UsageDaySerializer,
    UsageTotalsSerializer,
)
from gateway.filtersets import AccessKeyFilterSet, AliasFilterSet, UsageFilterSet


class AccessKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Applications' keys for the OpenAI-compatible gateway (``/v1/``). The secret is shown
    once, at creation; only its SHA-256 is stored."""

    queryset = queries.keys()
    serializer_class = AccessKeySerializer
    filterset_class = AccessKeyFilterSet
    ordering_fields = ["name", "created_at"]
    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    @extend_schema(
        request=AccessKeyWriteSerializer,
        responses={201: AccessKeyCreatedSerializer},
        summary="Create an access key (the response holds the secret, shown only this once)",
    )
    def create(self, request: Request) -> Response:
        data, ctx = self.validated(AccessKeyWriteSerializer)
        key, secret = services.create_key(ctx, **data)
        key.key = secret  # type: ignore[attr-defined]
        return Response(AccessKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=AccessKeyUpdateSerializer,
        responses=AccessKeySerializer,
        summary="Change a key's models, limits or expiry (send If-Match)",
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        key = self.get_object()
        serializer = AccessKeyUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        ctx = self.change_context(data.pop("reason", ""))
        key = services.update_key(ctx, key, expected_version=expected_version(request), **data)
        return Response(AccessKeySerializer(key).data)

    @extend_schema(
        request=KeyReasonSerializer,
        responses=AccessKeySerializer,
        summary="Revoke a key (gateways refuse it at once; the record and its usage stay)",
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        key = self.get_object()
        _, ctx = self.validated(KeyReasonSerializer)
        key = services.revoke_key(ctx, key)
        return Response(AccessKeySerializer(key).data)


class AliasViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Model names that route to one or more deployments by weight (canaries, migrations)."""

    queryset = queries.aliases()
    serializer_class = AliasSerializer
    filterset_class = AliasFilterSet
    ordering_fields = ["name", "created_at"]
    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    @extend_schema(request=AliasCreateSerializer, responses={201: AliasSerializer})
    def create(self, request: Request) -> Response:
        data, ctx = self.validated(AliasCreateSerializer)
        alias = services.create_alias(ctx, **data)
        return Response(
            AliasSerializer(queries.aliases().get(pk=alias.pk)).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        request=AliasUpdateSerializer,
        responses=AliasSerializer,
        summary="Change an alias's targets or weights (send If-Match)",
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        alias = self.get_object()
        data, ctx = self.validated(AliasUpdateSerializer)
        services.update_alias(ctx, alias, expected_version=expected_version(request), **data)
        return Response(AliasSerializer(queries.aliases().get(pk=alias.pk)).data)

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        alias = self.get_object()
        check_version(alias.version, expected_version(request), f"Alias {alias.name}")
        services.delete_alias(self.change_context(), alias)
        return Response(status=status.HTTP_204_NO_CONTENT)


class UsageViewSet(mixins.ListModelMixin, FleetModelViewSet):
    """Requests and tokens per access key, deployment and (UTC) day."""

    queryset = queries.usage()
    serializer_class = UsageDaySerializer
    filterset_class = UsageFilterSet
    ordering_fields = ["day", "deployment", "requests", "prompt_tokens", "completion_tokens"]
    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    @extend_schema(
        responses=UsageTotalsSerializer,
        summary="Totals over the rows the filters select",
    )
    @action(detail=False, methods=["get"])
    def totals(self, request: Request) -> Response:
        rows = self.filter_queryset(self.get_queryset())
        return Response(queries.usage_totals(rows))


class LiveView(APIView):
    """The gateway's figures now, summed over its processes (what the console shows)."""

    read_role = Role.VIEWER

    @extend_schema(responses=LiveSerializer, summary="Live gateway figures per deployment")
    def get(self, request: Request) -> Response:
        figures: dict[str, Any] = live.fleet_figures()
        return Response(figures)
