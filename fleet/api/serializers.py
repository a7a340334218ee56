from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api.base import ReasonField
from fleet.choices import NodeState
from fleet.models import JoinToken, Node, NodeCommand


class UsageSerializer(serializers.Serializer[Any]):
    cpu = serializers.FloatField(allow_null=True)
    memory = serializers.FloatField(allow_null=True)
    disk = serializers.FloatField(allow_null=True)
    gpu_memory = serializers.FloatField(allow_null=True)


class NodeSerializer(serializers.ModelSerializer[Node]):
    status = serializers.SerializerMethodField()
    flags = serializers.ListField(child=serializers.CharField(), read_only=True)
    usage = serializers.SerializerMethodField()
    hostname = serializers.SerializerMethodField()
    gpu_count = serializers.SerializerMethodField()

    class Meta:
        model = Node
        fields = [
            "id",
            "name",
            "status",
            "flags",
            "cordoned",
            "draining",
            "maintenance",
            "labels",
            "conditions",
            "last_heartbeat_at",
            "agent_version",
            "hostname",
            "usage",
            "gpu_count",
            "queue",
            "version",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=NodeState.choices))
    def get_status(self, obj: Node) -> str:
        return obj.get_status()

    @extend_schema_field(UsageSerializer)
    def get_usage(self, obj: Node) -> dict[str, float | None]:
        return obj.usage()

    def get_hostname(self, obj: Node) -> str:
        return str((obj.inventory.get("host") or {}).get("hostname", ""))

    def get_gpu_count(self, obj: Node) -> int:
        return len(obj.inventory.get("gpus") or [])


class NodeDetailSerializer(NodeSerializer):
    credential_rotation_pending = serializers.SerializerMethodField()

    class Meta(NodeSerializer.Meta):
        fields = [
            *NodeSerializer.Meta.fields,
            "state_changed_at",
            "inventory",
            "clock_skew_seconds",
            "joined_at",
            "credential_prefix",
            "credential_rotated_at",
            "credential_rotation_pending",
        ]
        read_only_fields = fields

    def get_credential_rotation_pending(self, obj: Node) -> bool:
        return bool(obj.pending_credential_hash)


class NodeUpdateSerializer(serializers.Serializer[Node]):
    cordoned = serializers.BooleanField(required=False)
    draining = serializers.BooleanField(required=False)
    maintenance = serializers.BooleanField(required=False)
    labels = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
    reason = ReasonField()


class NodeCommandSerializer(serializers.ModelSerializer[NodeCommand]):
    state = serializers.SerializerMethodField()
    node = serializers.SlugRelatedField(slug_field="name", read_only=True)  # type: ignore[var-annotated]
    round_trip_ms = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = NodeCommand
        fields = [
            "id",
            "node",
            "kind",
            "state",
            "arguments",
            "result",
            "error",
            "requested_by",
            "created_at",
            "expires_at",
            "completed_at",
            "round_trip_ms",
        ]
        read_only_fields = fields

    def get_state(self, obj: NodeCommand) -> str:
        return obj.get_state()


class JoinTokenSerializer(serializers.ModelSerializer[JoinToken]):
    status = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )  # type: ignore[var-annotated]

    class Meta:
        model = JoinToken
        fields = [
            "id",
            "name",
            "key_prefix",
            "status",
            "labels",
            "max_uses",
            "uses",
            "expires_at",
            "created_by",
            "created_at",
            "revoked_at",
            "version",
        ]
        read_only_fields = fields

    def get_status(self, obj: JoinToken) -> str:
        return obj.get_status()


class JoinTokenCreateSerializer(serializers.Serializer[JoinToken]):
    name = serializers.CharField(max_length=100)
    max_uses = serializers.IntegerField(min_value=1, max_value=100000, default=1)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    labels = serializers.DictField(
        child=serializers.CharField(allow_blank=True), required=False, default=dict
    )
    reason = ReasonField()


class JoinTokenCreatedSerializer(JoinTokenSerializer):
    key = serializers.CharField(read_only=True, help_text="The join token. Shown only once.")
    command = serializers.CharField(read_only=True, help_text="The command to run on a host.")

    class Meta(JoinTokenSerializer.Meta):
        fields = [*JoinTokenSerializer.Meta.fields, "key", "command"]
        read_only_fields = fields


class AgentJoinSerializer(serializers.Serializer[Any]):
    join_token = serializers.CharField(max_length=200)
    name = serializers.SlugField(max_length=63)
    inventory = serializers.DictField(required=False, default=dict)


class AgentJoinedSerializer(serializers.Serializer[Any]):
    node_id = serializers.IntegerField()
    name = serializers.CharField()
    credential = serializers.CharField(help_text="The node credential; store it with mode 0600.")
    queue = serializers.CharField()
    broker_url = serializers.CharField()
    broker_transport_options = serializers.DictField()
    heartbeat_interval_seconds = serializers.IntegerField()
    command_ttl_seconds = serializers.IntegerField()


class CommandResultSerializer(serializers.Serializer[Any]):
    result = serializers.DictField(required=False, allow_null=True, default=None)
    error = serializers.CharField(required=False, allow_blank=True, allow_null=True, default=None)
