from __future__ import annotations

from typing import Any

from django.db.models import Count, Prefetch, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.base import FleetModelViewSet, FleetViewSetMixin, expected_version
from core.choices import Role
from core.errors import check_version
from core.history import ChangeContext
from models_catalog import hub, services
from models_catalog.api.serializers import (
    CatalogModelDetailSerializer,
    CatalogModelSerializer,
    FitsOnSerializer,
    FootprintTableSerializer,
    ImportSerializer,
    LicencePolicySerializer,
    LicencePolicyUpdateSerializer,
    RepinSerializer,
    ResyncSerializer,
    SearchResultSerializer,
    VariantSerializer,
)
from models_catalog.filtersets import CatalogModelFilterSet, VariantFilterSet
from models_catalog.fits import fits_on, parse_contexts, variant_footprints
from models_catalog.models import CatalogModel, Variant


def _validated(serializer_class: Any, request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _variants() -> QuerySet[Variant]:
    return Variant.objects.select_related("model").prefetch_related("files")


class _NoFormatOverride:
    URL_FORMAT_OVERRIDE = None


class FormatFilterNegotiation(DefaultContentNegotiation):
    """``?format=gguf`` filters models by variant format here; it does not pick a renderer."""

    settings = _NoFormatOverride()  # type: ignore[assignment]


class CatalogModelViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Models imported from the hub, pinned to a commit, with their files and variants."""

    queryset = CatalogModel.objects.annotate(variant_count=Count("variants")).order_by("repo_id")
    serializer_class = CatalogModelSerializer
    filterset_class = CatalogModelFilterSet
    content_negotiation_class = FormatFilterNegotiation
    ordering_fields = ["repo_id", "parameter_count", "total_size", "imported_at"]
    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    def get_queryset(self) -> QuerySet[CatalogModel]:
        queryset = super().get_queryset()
        if self.action != "list":
            queryset = queryset.select_related("imported_by").prefetch_related(
                "files", Prefetch("variants", queryset=_variants())
            )
        return queryset

    def get_serializer_class(self) -> Any:
        return CatalogModelSerializer if self.action == "list" else CatalogModelDetailSerializer

    def _detail(self, model: CatalogModel) -> dict[str, Any]:
        model = self.get_queryset().get(pk=model.pk)
        return dict(CatalogModelDetailSerializer(model, context=self.get_serializer_context()).data)

    @extend_schema(
        request=ImportSerializer,
        responses={201: CatalogModelDetailSerializer},
        summary="Import a model from the hub (the commit is pinned)",
    )
    def create(self, request: Request) -> Response:
        data = _validated(ImportSerializer, request)
        model = services.import_model(
            self.change_context(data.get("reason")),
            repo_id=data["repo_id"],
            revision=data.get("revision") or None,
            secret_name=data.get("secret_name") or "",
        )
        return Response(self._detail(model), status=status.HTTP_201_CREATED)

    @extend_schema(summary="Delete a model with its files and variants")
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        model = self.get_object()
        check_version(model.version, expected_version(request), f"Model {model.repo_id}")
        services.delete_model(self.change_context(), model)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=None,
        responses=ResyncSerializer,
        summary="Compare the pin with upstream: files added, removed, changed; config changes",
    )
    @action(detail=True, methods=["post"])
    def resync(self, request: Request, pk: str | None = None) -> Response:
        diff = services.resync(self.change_context(), self.get_object())
        response = Response(ResyncSerializer(diff).data)
        response["ETag"] = f'"{diff["version"]}"'
        return response

    @extend_schema(
        request=RepinSerializer,
        responses=CatalogModelDetailSerializer,
        summary="Move the pin to the upstream commit (send If-Match)",
    )
    @action(detail=True, methods=["post"])
    def repin(self, request: Request, pk: str | None = None) -> Response:
        model = self.get_object()
        data = _validated(RepinSerializer, request)
        model = services.repin(
            self.change_context(data.get("reason")),
            model,
            expected_version=expected_version(request),
            commit=data.get("commit"),
        )
        return Response(self._detail(model))


CONTEXTS_PARAM = OpenApiParameter(
    "contexts",
    OpenApiTypes.STR,
    description="Comma-separated context lengths (default: 2048, 8192, 32768 and the maximum)",
)


class VariantViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, FleetModelViewSet):
    """Deployable forms of catalog models, with licence status, footprints and fits-on."""

    queryset = _variants()
    serializer_class = VariantSerializer
    filterset_class = VariantFilterSet
    content_negotiation_class = FormatFilterNegotiation
    ordering_fields = ["name", "size", "bits_per_weight", "created_at"]
    read_role = Role.VIEWER

    @extend_schema(
        parameters=[CONTEXTS_PARAM],
        responses=FootprintTableSerializer,
        summary="Memory footprint per runtime, context length and KV cache type",
    )
    @action(detail=True, methods=["get"])
    def footprint(self, request: Request, pk: str | None = None) -> Response:
        variant = self.get_object()
        contexts = parse_contexts(request.query_params.get("contexts"), variant.model)
        rows = [row.as_dict() for row in variant_footprints(variant, contexts)]
        body = {"variant": variant.pk, "contexts": contexts, "rows": rows}
        return Response(FootprintTableSerializer(body).data)

    @extend_schema(
        parameters=[
            CONTEXTS_PARAM,
            OpenApiParameter("kv_cache_type", OpenApiTypes.STR, description="f16 (default)"),
            OpenApiParameter("runtime", OpenApiTypes.STR, description="default per format"),
        ],
        responses=FitsOnSerializer,
        summary="Which nodes can run this variant now, per context length, and why not",
    )
    @action(detail=True, methods=["get"], url_path="fits-on")
    def fits_on(self, request: Request, pk: str | None = None) -> Response:
        variant = self.get_object()
        params = request.query_params
        matrix = fits_on(
            variant,
            parse_contexts(params.get("contexts"), variant.model),
            kv_cache_type=params.get("kv_cache_type") or "f16",
            runtime=params.get("runtime") or None,
        )
        return Response(FitsOnSerializer(matrix).data)


class CatalogSearchView(APIView):
    """Search the upstream hub (text in the repo id, task, library)."""

    read_role = Role.VIEWER

    @extend_schema(
        parameters=[
            OpenApiParameter("q", OpenApiTypes.STR, description="Text in the repository id"),
            OpenApiParameter("task", OpenApiTypes.STR, description="e.g. text-generation"),
            OpenApiParameter("library", OpenApiTypes.STR, description="e.g. gguf, transformers"),
            OpenApiParameter("sort", OpenApiTypes.STR, enum=list(hub.SEARCH_SORTS)),
            OpenApiParameter("limit", OpenApiTypes.INT, description="1–100, default 20"),
        ],
        responses=SearchResultSerializer(many=True),
        summary="Search the hub; results say which models are in the catalog already",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        try:
            limit = int(params.get("limit") or 20)
        except ValueError:
            limit = 20
        results = hub.search(
            params.get("q", ""),
            params.get("task", ""),
            params.get("library", ""),
            params.get("sort") or "downloads",
            limit,
        )
        imported = dict(
            CatalogModel.objects.filter(repo_id__in=[r["repo_id"] for r in results]).values_list(
                "repo_id", "pk"
            )
        )
        for result in results:
            result["imported"] = imported.get(result["repo_id"])
        return Response(SearchResultSerializer(results, many=True).data)


class LicencePolicyView(FleetViewSetMixin, APIView):
    """Licences allowed for deployment. Everyone signed in reads; admins change it."""

    read_role = Role.VIEWER
    write_role = Role.ADMIN

    @extend_schema(responses=LicencePolicySerializer, summary="The licence policy")
    def get(self, request: Request) -> Response:
        return Response(LicencePolicySerializer(services.policy_as_dict()).data)

    @extend_schema(
        request=LicencePolicyUpdateSerializer,
        responses=LicencePolicySerializer,
        summary="Replace the allowed licences (admins; send If-Match)",
    )
    def put(self, request: Request) -> Response:
        data = _validated(LicencePolicyUpdateSerializer, request)
        ctx = ChangeContext.from_request(request, reason=data.get("reason"))
        services.set_allowed_licences(
            ctx, data["licences"], expected_version=expected_version(request)
        )
        return Response(LicencePolicySerializer(services.policy_as_dict()).data)
