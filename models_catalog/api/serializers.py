from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api.base import ReasonField
from models_catalog import services
from models_catalog.choices import ParameterSource, SizeTier
from models_catalog.models import CatalogModel, ModelFile, Variant
from models_catalog.variants import nominal_bpw


def _allowed(context: Any) -> list[str]:
    """The licence policy, read once per answer (lists do not query it per row)."""
    if "allowed_licences" not in context:
        context["allowed_licences"] = services.get_allowed_licences()
    return list(context["allowed_licences"])


class ModelFileSerializer(serializers.ModelSerializer[ModelFile]):
    class Meta:
        model = ModelFile
        fields = ["path", "size", "sha256", "blob_id", "lfs"]
        read_only_fields = fields


class VariantSerializer(serializers.ModelSerializer[Variant]):
    repo_id = serializers.CharField(source="model.repo_id", read_only=True)
    licence = serializers.CharField(source="model.licence", read_only=True)
    nominal_bits_per_weight = serializers.SerializerMethodField()
    licence_allowed = serializers.SerializerMethodField()
    licence_reason = serializers.SerializerMethodField()
    files = serializers.SerializerMethodField()

    class Meta:
        model = Variant
        fields = [
            "id",
            "model",
            "repo_id",
            "name",
            "format",
            "quantization",
            "bits_per_weight",
            "nominal_bits_per_weight",
            "size",
            "files",
            "parent",
            "produced_by",
            "licence",
            "licence_allowed",
            "licence_reason",
            "created_at",
            "version",
        ]
        read_only_fields = fields

    def get_nominal_bits_per_weight(self, obj: Variant) -> float | None:
        return nominal_bpw(obj.format, obj.quantization)

    def get_licence_reason(self, obj: Variant) -> str | None:
        return services.check_licence(obj, _allowed(self.context))

    def get_licence_allowed(self, obj: Variant) -> bool:
        return self.get_licence_reason(obj) is None

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_files(self, obj: Variant) -> list[str]:
        return sorted(f.path for f in obj.files.all())


class CatalogModelSerializer(serializers.ModelSerializer[CatalogModel]):
    parameter_source = serializers.ChoiceField(
        choices=ParameterSource.choices,
        allow_blank=True,
        read_only=True,
        help_text="Where parameter_count comes from; blank when it is not known.",
    )
    size_tier = serializers.SerializerMethodField()
    variant_count = serializers.SerializerMethodField()
    licence_allowed = serializers.SerializerMethodField()

    class Meta:
        model = CatalogModel
        fields = [
            "id",
            "repo_id",
            "requested_revision",
            "commit_sha",
            "upstream_commit_sha",
            "last_synced_at",
            "architecture",
            "parameter_count",
            "parameter_source",
            "size_tier",
            "licence",
            "licence_allowed",
            "gated",
            "private",
            "task",
            "library",
            "tags",
            "total_size",
            "variant_count",
            "imported_at",
            "version",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=SizeTier.choices, allow_null=True))
    def get_size_tier(self, obj: CatalogModel) -> str | None:
        return obj.size_tier

    def get_variant_count(self, obj: CatalogModel) -> int:
        count = getattr(obj, "variant_count", None)
        return int(count) if count is not None else obj.variants.count()

    def get_licence_allowed(self, obj: CatalogModel) -> bool:
        return services.check_licence(obj, _allowed(self.context)) is None


class CatalogModelDetailSerializer(CatalogModelSerializer):
    files = ModelFileSerializer(many=True, read_only=True)
    variants = VariantSerializer(many=True, read_only=True)
    licence_reason = serializers.SerializerMethodField()
    imported_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )  # type: ignore[var-annotated]

    class Meta(CatalogModelSerializer.Meta):
        fields = [
            *CatalogModelSerializer.Meta.fields,
            "licence_reason",
            "model_type",
            "num_layers",
            "hidden_size",
            "num_attention_heads",
            "num_kv_heads",
            "head_dim",
            "max_context",
            "vocab_size",
            "config",
            "downloads",
            "secret_name",
            "imported_by",
            "files",
            "variants",
        ]
        read_only_fields = fields

    def get_licence_reason(self, obj: CatalogModel) -> str | None:
        return services.check_licence(obj, _allowed(self.context))


class ImportSerializer(serializers.Serializer[Any]):
    repo_id = serializers.CharField(max_length=200, help_text="owner/name on the hub")
    revision = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="Branch, tag or commit (default: the default branch); the commit is pinned.",
    )
    secret_name = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        help_text="Secret holding a Hugging Face token (gated or private repositories).",
    )
    reason = ReasonField()


class RepinSerializer(serializers.Serializer[Any]):
    commit = serializers.RegexField(
        r"^[0-9a-f]{40}$",
        required=False,
        help_text="The upstream commit shown by resync (default: the current upstream head).",
    )
    reason = ReasonField()


class FileFactsSerializer(serializers.Serializer[Any]):
    size = serializers.IntegerField()
    sha256 = serializers.CharField()


class FileChangeSerializer(serializers.Serializer[Any]):
    path = serializers.CharField()
    before = FileFactsSerializer()
    after = FileFactsSerializer()


class FileEntrySerializer(FileFactsSerializer):
    path = serializers.CharField()


class FileDiffSerializer(serializers.Serializer[Any]):
    added = FileEntrySerializer(many=True)
    removed = FileEntrySerializer(many=True)
    changed = FileChangeSerializer(many=True)


class ResyncSerializer(serializers.Serializer[Any]):
    repo_id = serializers.CharField()
    revision = serializers.CharField()
    pinned_commit = serializers.CharField()
    upstream_commit = serializers.CharField()
    up_to_date = serializers.BooleanField()
    files = FileDiffSerializer()
    config = serializers.DictField(help_text="{key: {before, after}}")
    facts = serializers.DictField(help_text="licence, gated, tags: {before, after}")
    version = serializers.IntegerField(help_text="Send as If-Match to repin.")


class FootprintSerializer(serializers.Serializer[Any]):
    runtime = serializers.CharField()
    device = serializers.CharField()
    context = serializers.IntegerField()  # type: ignore[assignment]
    kv_cache_type = serializers.CharField()
    weights_bytes = serializers.IntegerField()
    kv_cache_bytes = serializers.IntegerField(allow_null=True)
    overhead_bytes = serializers.IntegerField()
    total_bytes = serializers.IntegerField(allow_null=True)


class FootprintTableSerializer(serializers.Serializer[Any]):
    variant = serializers.IntegerField()
    contexts = serializers.ListField(child=serializers.IntegerField())
    rows = FootprintSerializer(many=True)


class FitsCellSerializer(serializers.Serializer[Any]):
    context = serializers.IntegerField()  # type: ignore[assignment]
    fits = serializers.BooleanField()
    needed_bytes = serializers.IntegerField(allow_null=True)
    free_bytes = serializers.IntegerField(allow_null=True)
    gpu_index = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField()


class FitsRowSerializer(serializers.Serializer[Any]):
    node = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    cells = FitsCellSerializer(many=True)


class FitsOnSerializer(serializers.Serializer[Any]):
    variant = serializers.IntegerField()
    runtime = serializers.CharField()
    device = serializers.CharField()
    kv_cache_type = serializers.CharField()
    contexts = serializers.ListField(child=serializers.IntegerField())
    needed_bytes = serializers.ListField(child=serializers.IntegerField(allow_null=True))
    nodes = FitsRowSerializer(many=True)


class SearchResultSerializer(serializers.Serializer[Any]):
    repo_id = serializers.CharField()
    task = serializers.CharField()
    library = serializers.CharField()
    downloads = serializers.IntegerField(allow_null=True)
    likes = serializers.IntegerField(allow_null=True)
    tags = serializers.ListField(child=serializers.CharField())
    gated = serializers.BooleanField(allow_null=True)
    private = serializers.BooleanField()
    imported = serializers.IntegerField(allow_null=True, help_text="Catalog id when imported.")


class LicencePolicySerializer(serializers.Serializer[Any]):
    licences = serializers.ListField(child=serializers.CharField())
    is_default = serializers.BooleanField(help_text="True until an admin sets the policy.")
    version = serializers.IntegerField()
    updated_at = serializers.DateTimeField(allow_null=True)


class LicencePolicyUpdateSerializer(serializers.Serializer[Any]):
    licences = serializers.ListField(child=serializers.CharField(max_length=100), max_length=500)
    reason = ReasonField()
