from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api.base import OptionalEmailField, ReasonField
from core.choices import Role, SecretKind, TokenScope
from core.models import ApiToken, HistoryEvent, Secret, User


class UserSerializer(serializers.ModelSerializer[User]):
    email = OptionalEmailField(read_only=True)

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "role",
            "is_active",
            "date_joined",
            "last_login",
            "version",
        ]
        read_only_fields = fields


class UserCreateSerializer(serializers.Serializer[User]):
    username = serializers.RegexField(r"^[\w.@+-]+\Z", max_length=150)
    email = OptionalEmailField(required=False, default="")
    first_name = serializers.CharField(required=False, allow_blank=True, default="", max_length=150)
    last_name = serializers.CharField(required=False, allow_blank=True, default="", max_length=150)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)
    password = serializers.CharField(
        required=False,
        allow_blank=True,
        write_only=True,
        style={"input_type": "password"},
        help_text="Leave empty to generate a one-time password, returned once.",
    )
    reason = ReasonField()


class UserCreatedSerializer(UserSerializer):
    one_time_password = serializers.CharField(
        read_only=True, allow_null=True, help_text="Shown once; null when a password was given."
    )

    class Meta(UserSerializer.Meta):
        fields = [*UserSerializer.Meta.fields, "one_time_password"]
        read_only_fields = fields


class UserUpdateSerializer(serializers.Serializer[User]):
    email = OptionalEmailField(required=False)
    first_name = serializers.CharField(required=False, allow_blank=True, max_length=150)
    last_name = serializers.CharField(required=False, allow_blank=True, max_length=150)
    role = serializers.ChoiceField(choices=Role.choices, required=False)
    is_active = serializers.BooleanField(required=False)
    reason = ReasonField()


class ApiTokenSerializer(serializers.ModelSerializer[ApiToken]):
    user: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    status = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "user",
            "name",
            "scope",
            "key_prefix",
            "status",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "version",
        ]
        read_only_fields = fields

    def get_status(self, obj: ApiToken) -> str:
        return obj.get_status()


class ApiTokenCreateSerializer(serializers.Serializer[ApiToken]):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=TokenScope.choices, default=TokenScope.READ)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    reason = ReasonField()


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    key = serializers.CharField(read_only=True, help_text="The token itself. Shown only once.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]
        read_only_fields = fields


class SecretSerializer(serializers.ModelSerializer[Secret]):
    created_by: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = Secret
        fields = [
            "id",
            "name",
            "kind",
            "description",
            "created_by",
            "created_at",
            "updated_at",
            "version",
        ]
        read_only_fields = fields


class SecretCreateSerializer(serializers.Serializer[Secret]):
    name = serializers.SlugField(max_length=100)
    kind = serializers.ChoiceField(choices=SecretKind.choices, default=SecretKind.GENERIC)
    description = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )
    value = serializers.CharField(
        write_only=True, trim_whitespace=False, max_length=16384, style={"input_type": "password"}
    )
    reason = ReasonField()


class SecretUpdateSerializer(serializers.Serializer[Secret]):
    kind = serializers.ChoiceField(choices=SecretKind.choices, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    value = serializers.CharField(
        write_only=True,
        required=False,
        trim_whitespace=False,
        max_length=16384,
        style={"input_type": "password"},
        help_text="A new value replaces the old one; it is never returned.",
    )
    reason = ReasonField()


class HistoryEventSerializer(serializers.ModelSerializer[HistoryEvent]):
    target_url = serializers.SerializerMethodField()

    class Meta:
        model = HistoryEvent
        fields = [
            "id",
            "occurred_at",
            "actor_type",
            "actor_id",
            "actor_name",
            "actor_detail",
            "verb",
            "target_type",
            "target_id",
            "target_name",
            "target_url",
            "changes",
            "reason",
            "request_id",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_target_url(self, obj: HistoryEvent) -> str | None:
        return obj.target_url


class MeSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices)
    token_scope = serializers.ChoiceField(choices=TokenScope.choices, allow_null=True)
