from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api.base import ReasonField
from deployments.autoscaling import policy_of
from deployments.models import STATUSES, Deployment, DeploymentRevision, Replica, Rollout
from deployments.services import MAX_HISTORY_LIMIT
from deployments.spec import MAX_REPLICAS, DeploymentSpecSerializer, current_spec


@extend_schema_field(DeploymentSpecSerializer)
class SpecField(serializers.JSONField):
    """The deployment spec (validated by the service, which knows the catalog and runtimes)."""


@extend_schema_field(OpenApiTypes.OBJECT)
class SpecChangesField(serializers.JSONField):
    """A JSON merge patch of the spec: objects merge, null restores a default."""


class RevisionSerializer(serializers.ModelSerializer[DeploymentRevision]):
    variant_name = serializers.SerializerMethodField()
    is_current = serializers.SerializerMethodField()

    class Meta:
        model = DeploymentRevision
        fields = [
            "number",
            "spec",
            "variant",
            "variant_name",
            "runtime",
            "diff",
            "author_type",
            "author_name",
            "reason",
            "rollbackable",
            "is_current",
            "created_at",
        ]
        read_only_fields = fields

    def get_variant_name(self, obj: DeploymentRevision) -> str:
        return str(obj.variant)

    def get_is_current(self, obj: DeploymentRevision) -> bool:
        return obj.pk == self.context.get("current_revision_id")


class ReplicaSerializer(serializers.ModelSerializer[Replica]):
    deployment_name = serializers.CharField(source="deployment.name", read_only=True)
    revision = serializers.IntegerField(source="revision.number", read_only=True)
    node_name = serializers.CharField(source="node.name", read_only=True, allow_null=True)
    endpoint = serializers.CharField(read_only=True)

    class Meta:
        model = Replica
        fields = [
            "id",
            "deployment",
            "deployment_name",
            "revision",
            "slot",
            "node",
            "node_name",
            "state",
            "reason",
            "endpoint",
            "host_port",
            "container_name",
            "restarts",
            "reserved_device",
            "reserved_bytes",
            "gpu_indices",
            "created_at",
            "started_at",
            "healthy_since",
            "available_at",
            "last_seen_at",
            "stopped_at",
        ]
        read_only_fields = fields


class RolloutSerializer(serializers.ModelSerializer[Rollout]):
    deployment_name = serializers.CharField(source="deployment.name", read_only=True)
    from_revision = serializers.IntegerField(
        source="from_revision.number", read_only=True, allow_null=True
    )
    to_revision = serializers.IntegerField(source="to_revision.number", read_only=True)

    class Meta:
        model = Rollout
        fields = [
            "id",
            "deployment",
            "deployment_name",
            "from_revision",
            "to_revision",
            "state",
            "is_rollback",
            "steps",
            "failure_reason",
            "gate",
            "started_at",
            "last_progress_at",
            "finished_at",
        ]
        read_only_fields = fields


class AutoscalingSummarySerializer(serializers.Serializer):  # type: ignore[type-arg]
    min_replicas = serializers.IntegerField()
    max_replicas = serializers.IntegerField()
    metric = serializers.CharField()
    target = serializers.FloatField()
    summary = serializers.CharField(help_text="autoscaled 1–4 on 4 concurrent requests …")


class AutoscalingStatusSerializer(serializers.Serializer):  # type: ignore[type-arg]
    enabled = serializers.BooleanField()
    policy = serializers.DictField(help_text="The policy as the autoscaler reads it.")
    summary = serializers.CharField()
    desired_replicas = serializers.IntegerField()
    last_decision = serializers.DictField(
        allow_null=True,
        help_text="at, mode (stable, panic, idle, wake, hold), stable and panic values, "
        "target, desired, ready, reason, blocked.",
    )
    blocked = serializers.CharField(help_text="Why new replicas wait for a node, if they do.")
    chart = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(allow_null=True)),
        help_text="The last 15 minutes, one point a tick: [epoch s, desired, ready, signal].",
    )


class DeploymentSerializer(serializers.ModelSerializer[Deployment]):
    status = serializers.ChoiceField(choices=STATUSES, read_only=True)
    revision = serializers.IntegerField(
        source="current_revision.number", read_only=True, allow_null=True
    )
    stable_revision = serializers.IntegerField(
        source="stable_revision.number", read_only=True, allow_null=True
    )
    runtime = serializers.CharField(source="current_revision.runtime", read_only=True)
    variant = serializers.IntegerField(source="current_revision.variant_id", read_only=True)
    variant_name = serializers.SerializerMethodField()
    ready_replicas = serializers.IntegerField(source="ready_count", read_only=True)
    up_to_date_replicas = serializers.IntegerField(source="up_to_date_count", read_only=True)
    nodes = serializers.SerializerMethodField()
    endpoints = serializers.SerializerMethodField()
    autoscaling = serializers.SerializerMethodField(
        help_text="The autoscaling bounds when on (null when off)."
    )

    class Meta:
        model = Deployment
        fields = [
            "id",
            "name",
            "status",
            "state",
            "revision",
            "stable_revision",
            "runtime",
            "variant",
            "variant_name",
            "desired_replicas",
            "ready_replicas",
            "up_to_date_replicas",
            "nodes",
            "endpoints",
            "autoscaling",
            "deletion_requested_at",
            "created_at",
            "version",
        ]
        read_only_fields = fields

    def get_variant_name(self, obj: Deployment) -> str:
        return str(obj.current_revision.variant) if obj.current_revision else ""

    @extend_schema_field(AutoscalingSummarySerializer(allow_null=True))
    def get_autoscaling(self, obj: Deployment) -> dict[str, Any] | None:
        policy = policy_of(obj.current_revision.spec if obj.current_revision else None)
        if not policy.enabled:
            return None
        return {
            "min_replicas": policy.min_replicas,
            "max_replicas": policy.max_replicas,
            "metric": policy.metric,
            "target": policy.target,
            "summary": policy.describe(),
        }

    def get_nodes(self, obj: Deployment) -> list[str]:
        return sorted({r.node.name for r in obj.live_replicas if r.node})  # type: ignore[attr-defined]

    def get_endpoints(self, obj: Deployment) -> list[str]:
        return [r.endpoint for r in obj.live_replicas if r.endpoint]  # type: ignore[attr-defined]


class DeploymentDetailSerializer(DeploymentSerializer):
    spec = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )  # type: ignore[var-annotated]

    class Meta(DeploymentSerializer.Meta):
        fields = [
            *DeploymentSerializer.Meta.fields,
            "spec",
            "revision_history_limit",
            "paused_reason",
            "created_by",
        ]
        read_only_fields = fields

    @extend_schema_field(DeploymentSpecSerializer)
    def get_spec(self, obj: Deployment) -> dict[str, Any]:
        return current_spec(obj)


class DeploymentCreateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=63)
    spec = SpecField()
    revision_history_limit = serializers.IntegerField(
        min_value=0, max_value=MAX_HISTORY_LIMIT, required=False, allow_null=True, default=None
    )
    reason = ReasonField()


class DeploymentUpdateSerializer(serializers.Serializer[Any]):
    spec = SpecChangesField(required=False, default=dict)
    revision_history_limit = serializers.IntegerField(
        min_value=0, max_value=MAX_HISTORY_LIMIT, required=False, allow_null=True, default=None
    )
    reason = ReasonField()


class ScaleSerializer(serializers.Serializer[Any]):
    replicas = serializers.IntegerField(min_value=0, max_value=MAX_REPLICAS)
    reason = ReasonField()


class RollbackSerializer(serializers.Serializer[Any]):
    revision = serializers.IntegerField(min_value=1, help_text="The revision number to restore.")
    reason = ReasonField()


class ReasonSerializer(serializers.Serializer[Any]):
    reason = ReasonField()


class LogsRequestSerializer(serializers.Serializer[Any]):
    tail = serializers.IntegerField(min_value=1, max_value=1000, default=200)


class ReplicaLogsSerializer(serializers.Serializer[Any]):
    replica = serializers.IntegerField()
    lines = serializers.ListField(
        child=serializers.CharField(), help_text="Oldest first, each '<UTC timestamp> <text>'."
    )
    fetched_at = serializers.DateTimeField(allow_null=True)
    pending_command = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(help_text="The newest answered command's error, if it failed.")


class LogsCommandSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    state = serializers.CharField()
    arguments = serializers.JSONField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()


class TryRequestSerializer(serializers.Serializer[Any]):
    prompt = serializers.CharField(trim_whitespace=False, help_text="Up to 8 KB (UTF-8).")
    max_tokens = serializers.IntegerField(min_value=1, max_value=512, default=64)
    replica = serializers.IntegerField(
        required=False, allow_null=True, help_text="A serving replica; any when absent."
    )


class TryResultSerializer(serializers.Serializer[Any]):
    replica = serializers.IntegerField()
    slot = serializers.IntegerField()
    node = serializers.CharField()
    url = serializers.CharField()
    text = serializers.CharField()
    prompt_tokens = serializers.IntegerField(allow_null=True)
    completion_tokens = serializers.IntegerField(allow_null=True)
    ttfb_ms = serializers.FloatField(help_text="Request sent → first byte of the answer.")
    total_ms = serializers.FloatField(help_text="Request sent → whole answer read.")
