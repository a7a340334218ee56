"""The model page's comparison of its variants: size, bpw, perplexity (and its delta to the
job's F16 reference), tokens/s, on how many nodes each fits, and the serving figures of the
latest benchmark per node kind, for picking a trade-off."""

from __future__ import annotations

from typing import Any

from core.errors import ServiceError
from fleet.models import Node
from models_catalog import serving_figures
from models_catalog.fits import fits_on, model_architecture
from models_catalog.footprint import default_contexts
from models_catalog.models import CatalogModel, Variant, VariantEvaluation
from models_catalog.variants import nominal_bpw


def _fits_count(variant: Variant, context: int, nodes: list[Node]) -> int | None:
    try:
        table = fits_on(variant, [context], nodes=nodes)
    except ServiceError:  # no runtime serves the format
        return None
    return sum(1 for row in table["nodes"] if any(c["fits"] for c in row["cells"]))


def comparison(model: CatalogModel) -> dict[str, Any]:
    variants = list(
        model.variants.select_related("parent").prefetch_related("files").order_by("name")
    )
    latest: dict[int, VariantEvaluation] = {}
    for measured in VariantEvaluation.objects.filter(variant__model=model).order_by(
        "variant_id", "-measured_at"
    ):
        latest.setdefault(measured.variant_id, measured)
    contexts = default_contexts(model_architecture(model).max_context)
    context = contexts[0] if contexts else 2048
    nodes = list(Node.objects.order_by("name"))
    serving = serving_figures.for_variants([v.pk for v in variants])
    rows = []
    for variant in variants:
        variant.model = model
        evaluation = latest.get(variant.pk)
        lineage = variant.produced_by or {}
        rows.append(
            {
                "id": variant.pk,
                "name": variant.name,
                "format": variant.format,
                "quantization": variant.quantization,
                "size": variant.size,
                "bits_per_weight": variant.bits_per_weight
                or nominal_bpw(variant.format, variant.quantization),
                "parent": variant.parent.name if variant.parent else None,
                "produced_by": "quantize" if lineage.get("source") == "quantize" else "upstream",
                "tool": lineage.get("tool"),
                "tool_version": lineage.get("tool_version"),
                "job": lineage.get("job"),
                "perplexity": evaluation.perplexity if evaluation else None,
                "perplexity_stderr": evaluation.perplexity_stderr if evaluation else None,
                "baseline": evaluation.baseline_name if evaluation else None,
                "baseline_perplexity": evaluation.baseline_perplexity if evaluation else None,
                "perplexity_delta": evaluation.perplexity_delta if evaluation else None,
                "tokens_per_second": evaluation.tokens_per_second if evaluation else None,
                "smoke_ok": evaluation.smoke_ok if evaluation else None,
                "evaluated_on": evaluation.node_name if evaluation else None,
                "fits_on": _fits_count(variant, context, nodes),
                "serving": serving.get(variant.pk, []),
            }
        )
    return {"model": model.pk, "context": context, "nodes": len(nodes), "variants": rows}
