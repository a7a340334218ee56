"""Query parameters and answers of the metrics API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from monitoring.choices import NODE_METRICS, REPLICA_METRICS

MAX_WINDOW_S = 31 * 24 * 3600


class SnapshotQuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    deployment = serializers.IntegerField(required=False, min_value=1)
    node = serializers.IntegerField(required=False, min_value=1)
    fleet = serializers.BooleanField(required=False, default=False)
    window = serializers.IntegerField(
        required=False,
        default=900,
        min_value=10,
        max_value=MAX_WINDOW_S,
        help_text="seconds back from now (raw samples up to 6 h, 1-minute means beyond)",
    )
    since_ms = serializers.IntegerField(
        required=False, min_value=0, help_text="only points after this time (epoch ms)"
    )
    names = serializers.CharField(
        required=False, default="", help_text="comma-separated metric names (all if empty)"
    )

    def validate_names(self, value: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in value.split(",") if n.strip())
        unknown = sorted(set(names) - REPLICA_METRICS - NODE_METRICS)
        if unknown:
            raise serializers.ValidationError(f"unknown metric names: {', '.join(unknown)}")
        return names

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        chosen = [k for k in ("deployment", "node") if attrs.get(k)] + (
            ["fleet"] if attrs.get("fleet") else []
        )
        if len(chosen) != 1:
            raise serializers.ValidationError(
                "Name exactly one of deployment=<id>, node=<id> or fleet=true."
            )
        return attrs


class PointsField(serializers.ListField):  # type: ignore[type-arg]
    child = serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2)


class SeriesSnapshotSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    name = serializers.CharField()
    device = serializers.CharField(allow_blank=True)
    node = serializers.IntegerField()
    deployment = serializers.IntegerField(allow_null=True)
    replica = serializers.IntegerField(help_text="0 for node series")
    points = PointsField(help_text="[epoch ms, value] pairs, oldest first")


class SnapshotSerializer(serializers.Serializer):  # type: ignore[type-arg]
    group = serializers.CharField(help_text="the live group carrying new points")
    source = serializers.ChoiceField(choices=["raw", "rollup"])  # type: ignore[assignment]
    since_ms = serializers.IntegerField()
    until_ms = serializers.IntegerField()
    series = SeriesSnapshotSerializer(many=True)


class MetricsAnswerSerializer(serializers.Serializer):  # type: ignore[type-arg]
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField(help_text="already stored (a re-sent batch)")
    rejected = serializers.IntegerField()
    rejected_reasons = serializers.ListField(child=serializers.CharField())
