from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.api.base import ReasonField
from gateway.models import AccessKey, Alias, UsageDay


class AccessKeySerializer(serializers.ModelSerializer[AccessKey]):
    status = serializers.CharField(source="get_status", read_only=True)
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True
    )

    class Meta:
        model = AccessKey
        fields = [
            "id",
            "name",
            "description",
            "key_prefix",
            "all_models",
            "allowed_models",
            "requests_per_minute",
            "tokens_per_minute",
            "expires_at",
            "revoked_at",
            "status",
            "created_by",
            "created_at",
            "version",
        ]
        read_only_fields = fields


class AccessKeyCreatedSerializer(AccessKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The secret: shown this once only.")

    class Meta(AccessKeySerializer.Meta):
        fields = [*AccessKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


PG_INT_MAX = 2_147_483_647


class AccessKeyWriteSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    all_models = serializers.BooleanField(
        required=False, default=True, help_text="True: every deployment and alias."
    )
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        default=list,
        help_text="Deployment or alias names this key may use when all_models is false.",
    )
    # the columns are PostgreSQL integers: a larger limit is a 400, not a 500
    requests_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=PG_INT_MAX
    )
    tokens_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=PG_INT_MAX
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    reason = ReasonField()


class AccessKeyUpdateSerializer(AccessKeyWriteSerializer):
    name = serializers.CharField(max_length=100, required=False)
    all_models = serializers.BooleanField(required=False)
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False
    )


class KeyReasonSerializer(serializers.Serializer[Any]):
    reason = ReasonField()


class AliasTargetSerializer(serializers.Serializer[Any]):
    deployment = serializers.CharField(max_length=63)
    weight = serializers.IntegerField(min_value=0, max_value=1000, default=1)


class AliasSerializer(serializers.ModelSerializer[Alias]):
    targets = serializers.SerializerMethodField()

    class Meta:
        model = Alias
        fields = ["id", "name", "description", "targets", "created_at", "version"]
        read_only_fields = fields

    def get_targets(self, alias: Alias) -> list[dict[str, Any]]:
        return [{"deployment": t.deployment.name, "weight": t.weight} for t in alias.targets.all()]


class AliasCreateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    targets = AliasTargetSerializer(many=True)
    reason = ReasonField()


class AliasUpdateSerializer(serializers.Serializer[Any]):
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    targets = AliasTargetSerializer(many=True, required=False)
    reason = ReasonField()


class UsageDaySerializer(serializers.ModelSerializer[UsageDay]):
    key_name = serializers.CharField(source="key.name", read_only=True)
    total_tokens = serializers.IntegerField(read_only=True)

    class Meta:
        model = UsageDay
        fields = [
            "day",
            "key",
            "key_name",
            "deployment",
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
        ]
        read_only_fields = fields


class UsageTotalsSerializer(serializers.Serializer[Any]):
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class LiveDeploymentSerializer(serializers.Serializer[Any]):
    deployment = serializers.CharField()
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]
    in_flight = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    requests_per_s = serializers.FloatField()
    errors_per_s = serializers.FloatField()
    p50_ms = serializers.FloatField(allow_null=True)
    p99_ms = serializers.FloatField(allow_null=True)


class LiveSerializer(serializers.Serializer[Any]):
    processes = serializers.IntegerField()
    deployments = LiveDeploymentSerializer(many=True)
    ejected_replicas = serializers.ListField(child=serializers.IntegerField())
    problem = serializers.CharField()
