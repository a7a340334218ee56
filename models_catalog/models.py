"""The model catalog: models pinned to a commit, their files, variants, the fleet store."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.models import VersionedModel
from models_catalog.choices import ParameterSource, SizeTier, VariantFormat


def size_tier(parameters: int | None) -> str | None:
    """micro 0.1–1.4 B, small 1.5–13.9 B, medium 14–30 B, large above; below 0.1 B: tiny."""
    if parameters is None:
        return None
    billions = parameters / 1e9
    if billions < 0.1:
        return SizeTier.TINY
    if billions < 1.45:
        return SizeTier.MICRO
    if billions < 13.95:
        return SizeTier.SMALL
    if billions <= 30:
        return SizeTier.MEDIUM
    return SizeTier.LARGE


class CatalogModel(VersionedModel):
    """A Hugging Face repository imported into the catalog, pinned to one commit."""

    repo_id = models.CharField(max_length=200, unique=True)
    requested_revision = models.CharField(max_length=200, default="main")
    commit_sha = models.CharField(max_length=40)
    upstream_commit_sha = models.CharField(max_length=40, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    architecture = models.CharField(max_length=100, blank=True)
    model_type = models.CharField(max_length=60, blank=True)
    config = models.JSONField(default=dict, blank=True)
    num_layers = models.PositiveIntegerField(null=True, blank=True)
    hidden_size = models.PositiveIntegerField(null=True, blank=True)
    num_attention_heads = models.PositiveIntegerField(null=True, blank=True)
    num_kv_heads = models.PositiveIntegerField(null=True, blank=True)
    head_dim = models.PositiveIntegerField(null=True, blank=True)
    max_context = models.PositiveIntegerField(null=True, blank=True)
    vocab_size = models.PositiveIntegerField(null=True, blank=True)
    parameter_count = models.BigIntegerField(null=True, blank=True)
    parameter_source = models.CharField(max_length=16, choices=ParameterSource.choices, blank=True)
    licence = models.CharField(max_length=100, blank=True)
    gated = models.BooleanField(default=False)
    private = models.BooleanField(default=False)
    tags = models.JSONField(default=list, blank=True)
    task = models.CharField(max_length=60, blank=True)
    library = models.CharField(max_length=60, blank=True)
    downloads = models.BigIntegerField(null=True, blank=True)
    total_size = models.BigIntegerField(default=0)
    secret_name = models.CharField(
        max_length=100, blank=True, help_text="Secret holding the Hugging Face token, if any."
    )
    imported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    imported_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["repo_id"]

    def __str__(self) -> str:
        return self.repo_id

    @property
    def size_tier(self) -> str | None:
        return size_tier(self.parameter_count)


class ModelFile(models.Model):
    """One file of the pinned commit, as the hub lists it."""

    model = models.ForeignKey(CatalogModel, models.CASCADE, related_name="files")
    path = models.CharField(max_length=500)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    blob_id = models.CharField(max_length=40, blank=True, help_text="git blob sha1")
    lfs = models.BooleanField(default=False)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["model", "path"], name="catalog_file_unique_path")
        ]

    def __str__(self) -> str:
        return self.path


class Variant(VersionedModel):
    """A deployable form of a model: original weights, a GGUF file, an ONNX folder, …"""

    model = models.ForeignKey(CatalogModel, models.CASCADE, related_name="variants")
    name = models.CharField(max_length=200)
    format = models.CharField(max_length=16, choices=VariantFormat.choices)
    quantization = models.CharField(max_length=32, blank=True)
    bits_per_weight = models.FloatField(null=True, blank=True)
    files = models.ManyToManyField(ModelFile, related_name="variants", blank=True)
    size = models.BigIntegerField(default=0)
    parent = models.ForeignKey(
        "self", models.SET_NULL, null=True, blank=True, related_name="children"
    )
    produced_by = models.JSONField(
        default=dict, blank=True, help_text="'upstream', or the tool, version and parameters."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model", "name"]
        constraints = [
            models.UniqueConstraint(fields=["model", "name"], name="catalog_variant_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.model.repo_id}:{self.name}"


class StoredBlob(models.Model):
    """A file in the fleet's content-addressed store (path derived from the sha256)."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.BigIntegerField()
    stored_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.sha256


class NodeModel(models.Model):
    """A variant present (or arriving) on a node, in the node's hub cache."""

    class State(models.TextChoices):
        # A download job is bringing it.
        DOWNLOADING = "downloading", "Downloading"
        # Every file is there and its sha256 verified.
        PRESENT = "present", "Present"

    node = models.ForeignKey("fleet.Node", models.CASCADE, related_name="models")
    variant = models.ForeignKey(Variant, models.CASCADE, related_name="placements")
    commit_sha = models.CharField(max_length=40)
    state = models.CharField(max_length=16, choices=State.choices, default=State.DOWNLOADING)
    size = models.BigIntegerField(default=0)
    verified_at = models.DateTimeField(null=True, blank=True)
    pinned = models.BooleanField(default=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["node", "variant"]
        constraints = [
            models.UniqueConstraint(fields=["node", "variant"], name="catalog_nodemodel_unique")
        ]

    def __str__(self) -> str:
        return f"{self.variant} on {self.node}"


from models_catalog.evaluations import VariantEvaluation  # noqa: E402

__all__ = ["CatalogModel", "ModelFile", "NodeModel", "StoredBlob", "Variant", "VariantEvaluation"]
