"""What a quantize job measured about a variant it produced (imported by models_catalog.models).

Lineage itself (parent, tool, version, exact parameters, sha256, node, duration) is on the
variant: ``Variant.parent`` and ``Variant.produced_by``; the evaluation is a row of its own
because a variant may be evaluated again (another node, another text set).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class VariantEvaluation(models.Model):
    """Perplexity (GGUF) or a load-and-generate smoke check (ONNX), and tokens/s, on a node."""

    variant = models.ForeignKey(
        "models_catalog.Variant", models.CASCADE, related_name="evaluations"
    )
    job = models.ForeignKey("core.Job", models.SET_NULL, null=True, blank=True, related_name="+")
    node = models.ForeignKey("fleet.Node", models.SET_NULL, null=True, blank=True, related_name="+")
    node_name = models.CharField(max_length=100, blank=True)
    perplexity = models.FloatField(null=True, blank=True)
    perplexity_stderr = models.FloatField(null=True, blank=True)
    # The perplexity of the job's reference (the F16 conversion, or the GGUF source) on the
    # same text and context, measured in the same job: the delta is comparable.
    baseline_name = models.CharField(max_length=32, blank=True)
    baseline_perplexity = models.FloatField(null=True, blank=True)
    context = models.PositiveIntegerField(null=True, blank=True)
    text_sha256 = models.CharField(max_length=64, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    smoke_ok = models.BooleanField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    measured_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["variant", "-measured_at"]

    def __str__(self) -> str:
        return f"evaluation of {self.variant_id} on {self.node_name or 'a node'}"

    @property
    def perplexity_delta(self) -> float | None:
        if self.perplexity is None or self.baseline_perplexity is None:
            return None
        return self.perplexity - self.baseline_perplexity
