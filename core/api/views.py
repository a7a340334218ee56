from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import services
from core.api.base import FleetModelViewSet, expected_version
from core.api.serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenCreateSerializer,
    ApiTokenSerializer,
    HistoryEventSerializer,
    MeSerializer,
    SecretCreateSerializer,
    SecretSerializer,
    SecretUpdateSerializer,
    UserCreatedSerializer,
    UserCreateSerializer,
    UserSerializer,
    UserUpdateSerializer,
)
from core.choices import Role
from core.errors import check_version
from core.filtersets import ApiTokenFilterSet, HistoryEventFilterSet, UserFilterSet
from core.models import ApiToken, HistoryEvent, Secret, User


class MeView(APIView):
    @extend_schema(responses=MeSerializer, summary="Who am I (user, role, token scope)")
    def get(self, request: Request) -> Response:
        token = request.auth if isinstance(request.auth, ApiToken) else None
        user = request.user
        data = {
            "id": user.pk,
            "username": user.get_username(),
            "role": getattr(user, "role", None),
            "token_scope": token.scope if token else None,
        }
        return Response(MeSerializer(data).data)


class UserViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    FleetModelViewSet,
):
    """People who can sign in, and their roles. Admins only."""

    queryset = User.objects.all()
    serializer_class = UserSerializer
    filterset_class = UserFilterSet
    ordering_fields = ["username", "date_joined", "last_login", "role"]
    read_role = Role.ADMIN
    write_role = Role.ADMIN

    @extend_schema(request=UserCreateSerializer, responses={201: UserCreatedSerializer})
    def create(self, request: Request) -> Response:
        data, ctx = self.validated(UserCreateSerializer)
        user, one_time_password = services.create_user(ctx, **data)
        user.one_time_password = one_time_password  # type: ignore[attr-defined]
        return Response(UserCreatedSerializer(user).data, status=201)

    @extend_schema(request=UserUpdateSerializer, responses=UserSerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        user = self.get_object()
        data, ctx = self.validated(UserUpdateSerializer)
        user = services.update_user(ctx, user, expected_version=expected_version(request), **data)
        return Response(UserSerializer(user).data)


class ApiTokenViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    FleetModelViewSet,
):
    """Personal API tokens. Everyone manages their own; admins see and revoke everyone's."""

    serializer_class = ApiTokenSerializer
    filterset_class = ApiTokenFilterSet
    ordering_fields = ["created_at", "last_used_at", "name"]
    read_role = Role.VIEWER
    write_role = Role.VIEWER

    def get_queryset(self) -> QuerySet[ApiToken]:
        queryset = ApiToken.objects.select_related("user")
        user = self.request.user
        if isinstance(user, User) and user.is_fleet_admin:
            return queryset
        return queryset.filter(user=user.pk)

    @extend_schema(request=ApiTokenCreateSerializer, responses={201: ApiTokenCreatedSerializer})
    def create(self, request: Request) -> Response:
        data, ctx = self.validated(ApiTokenCreateSerializer)
        assert isinstance(request.user, User)
        token, key = services.create_token(
            ctx,
            owner=request.user,
            **data,  # type: ignore[arg-type]
        )
        token.key = key  # type: ignore[attr-defined]
        return Response(ApiTokenCreatedSerializer(token).data, status=201)

    @extend_schema(summary="Revoke a token (it stops working at once; the record stays)")
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        token = self.get_object()
        services.revoke_token(self.change_context(), token)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SecretViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    FleetModelViewSet,
):
    """Encrypted credentials (Hugging Face tokens, registry credentials). Values are write-only."""

    queryset = Secret.objects.select_related("created_by")
    serializer_class = SecretSerializer
    ordering_fields = ["name", "created_at", "updated_at"]
    filterset_fields = ["kind"]
    read_role = Role.VIEWER
    write_role = Role.OPERATOR

    @extend_schema(request=SecretCreateSerializer, responses={201: SecretSerializer})
    def create(self, request: Request) -> Response:
        data, ctx = self.validated(SecretCreateSerializer)
        secret = services.create_secret(ctx, **data)
        return Response(SecretSerializer(secret).data, status=201)

    @extend_schema(request=SecretUpdateSerializer, responses=SecretSerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        secret = self.get_object()
        data, ctx = self.validated(SecretUpdateSerializer)
        secret = services.update_secret(
            ctx, secret, expected_version=expected_version(request), **data
        )
        return Response(SecretSerializer(secret).data)

    def destroy(self, request: Request, pk: str | None = None) -> Response:
        secret = self.get_object()
        check_version(secret.version, expected_version(request), f"Secret {secret.name}")
        services.delete_secret(self.change_context(), secret)
        return Response(status=status.HTTP_204_NO_CONTENT)


class HistoryEventViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    FleetModelViewSet,
):
    """The team-shared history: every change, by whom, when and why. Read-only."""

    queryset = HistoryEvent.objects.all()
    serializer_class = HistoryEventSerializer
    filterset_class = HistoryEventFilterSet
    ordering_fields = ["occurred_at", "id"]
    read_role = Role.VIEWER
    write_role = Role.VIEWER  # there are no write actions: writes answer 405 to everyone
