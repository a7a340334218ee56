"""Serializers of /api/v1/benchmarks/…: profiles, suites, benchmark and suite runs."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from benchmarks.models import BenchmarkProfile, BenchmarkRun, SuiteRun, TestSuite
from core.api.base import ReasonField


class ProfileSerializer(serializers.ModelSerializer[BenchmarkProfile]):
    created_by = serializers.CharField(source="created_by.username", default="", read_only=True)

    class Meta:
        model = BenchmarkProfile
        fields = [
            "id",
            "name",
            "description",
            "spec",
            "created_by",
            "created_at",
            "updated_at",
            "version",
        ]
        read_only_fields = fields


class ProfileWriteSerializer(serializers.Serializer[Any]):
    name = serializers.SlugField(max_length=100)
    description = serializers.CharField(allow_blank=True, default="", max_length=2000)
    spec = serializers.DictField(
        help_text="Levels, lengths, stream, warm-up, duration or requests (docs/benchmarks.md)."
    )
    reason = ReasonField()


class ProfileUpdateSerializer(serializers.Serializer[Any]):
    description = serializers.CharField(allow_blank=True, required=False, max_length=2000)
    spec = serializers.DictField(required=False, help_text="Fields given replace the stored ones.")
    reason = ReasonField()


class SuiteSerializer(serializers.ModelSerializer[TestSuite]):
    created_by = serializers.CharField(source="created_by.username", default="", read_only=True)

    class Meta:
        model = TestSuite
        fields = [
            "id",
            "name",
            "description",
            "cases",
            "created_by",
            "created_at",
            "updated_at",
            "version",
        ]
        read_only_fields = fields


class SuiteWriteSerializer(serializers.Serializer[Any]):
    name = serializers.SlugField(max_length=100)
    description = serializers.CharField(allow_blank=True, default="", max_length=2000)
    cases = serializers.ListField(
        help_text="The cases, each with a prompt or messages and a check."
    )
    reason = ReasonField()


class SuiteUpdateSerializer(serializers.Serializer[Any]):
    description = serializers.CharField(allow_blank=True, required=False, max_length=2000)
    cases = serializers.ListField(required=False, help_text="The whole new list of cases.")
    reason = ReasonField()


class _RunSerializer(serializers.ModelSerializer[Any]):
    job = serializers.IntegerField(source="job_id", read_only=True)
    state = serializers.CharField(source="job.state", read_only=True)
    progress = serializers.JSONField(source="job.progress", read_only=True)
    error = serializers.CharField(source="job.error", read_only=True)
    cancel_requested = serializers.BooleanField(source="job.cancel_requested", read_only=True)
    started_at = serializers.DateTimeField(source="job.started_at", read_only=True)
    finished_at = serializers.DateTimeField(source="job.finished_at", read_only=True)
    actor_name = serializers.CharField(source="job.actor_name", read_only=True)
    rollout = serializers.IntegerField(source="rollout_id", read_only=True, allow_null=True)

    common = [
        "id",
        "job",
        "state",
        "progress",
        "error",
        "cancel_requested",
        "target_kind",
        "deployment",
        "deployment_name",
        "targets",
        "rollout",
        "actor_name",
        "created_at",
        "started_at",
        "finished_at",
    ]


class BenchmarkRunSerializer(_RunSerializer):
    class Meta:
        model = BenchmarkRun
        fields = [
            *_RunSerializer.common,
            "profile",
            "profile_name",
            "profile_spec",
            "generator",
            "results",
        ]
        read_only_fields = fields


class SuiteRunSerializer(_RunSerializer):
    class Meta:
        model = SuiteRun
        fields = [*_RunSerializer.common, "suite", "suite_name", "cases", "results"]
        read_only_fields = fields


class RunCreateSerializer(serializers.Serializer[Any]):
    deployment = serializers.CharField(
        required=False, help_text="A deployment's name: measured through the gateway."
    )
    replicas = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        max_length=8,
        help_text="Replica ids of one deployment: each measured directly, one after another.",
    )
    reason = ReasonField()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("deployment")) == bool(attrs.get("replicas")):
            raise serializers.ValidationError(
                {"deployment": "Give either a deployment or replicas (not both)."}
            )
        return attrs


class BenchmarkRunCreateSerializer(RunCreateSerializer):
    profile = serializers.SlugField(help_text="A benchmark profile's name.")


class SuiteRunCreateSerializer(RunCreateSerializer):
    suite = serializers.SlugField(help_text="A test suite's name.")


class RunActionSerializer(serializers.Serializer[Any]):
    reason = ReasonField()
