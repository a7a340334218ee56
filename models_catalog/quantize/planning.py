"""Checking a quantize request before any job exists, sizing it, and picking a node.

Everything here refuses with a :class:`ServiceError` that says what to do; nothing is written.
The node's agent checks again what only it can know (free disk at that moment, the tools, the
converter's verdict on the tokenizer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import ServiceError
from fleet.models import Node
from models_catalog.models import Variant
from models_catalog.quantize import levels as lv
from models_catalog.quantize.architectures import converter_version, gguf_architectures
from models_catalog.variants import weights_bytes

OUTPUT_DIR = "quantized"
MAX_THREADS = 256
MIN_MEMORY_MB = 256
GB = 1_000_000_000
RAM_OVERHEAD = GB // 2
DISK_MARGIN = 0.1


@dataclass
class Plan:
    """A checked request: levels to make, their names and paths, the sizes involved."""

    fmt: str
    levels: list[str]
    reused: dict[str, Variant]
    outputs: dict[str, dict[str, Any]]
    parameters: int
    work_bytes: int
    disk_bytes: int
    ram_bytes: int
    imatrix_levels: list[str] = field(default_factory=list)


def parameters_of(variant: Variant) -> int:
    """Parameter count: the model's, else estimated from the source's weights and dtype."""
    model = variant.model
    if model.parameter_count:
        return int(model.parameter_count)
    weights = weights_bytes(variant.files.all()) or variant.size
    return int(weights * 8 / lv.source_bits(variant.format, variant.quantization))


def short_name(variant: Variant) -> str:
    return variant.model.repo_id.rsplit("/", 1)[-1]


def output_name(variant: Variant, fmt: str, level: str, imatrix: bool) -> str:
    """Variant names encode what makes an output different (reuse matches on them)."""
    if fmt == lv.FORMAT_ONNX:
        return f"onnx-{level}"
    name = f"{short_name(variant)}-{level}"
    if imatrix:
        name += "-imatrix"
    if variant.format == lv.FORMAT_GGUF:
        name += f"-from-{variant.quantization or variant.name}"
    return name


def output_path(variant: Variant, fmt: str, level: str, name: str) -> str:
    if fmt == lv.FORMAT_ONNX:
        return f"{OUTPUT_DIR}/{name}"  # a folder: model.onnx + config + tokenizer files
    return f"{OUTPUT_DIR}/{name}.gguf"


def check_source(variant: Variant, fmt: str, wanted: list[str]) -> None:
    model = variant.model
    if fmt == lv.FORMAT_GGUF and variant.format not in ("safetensors", lv.FORMAT_GGUF):
        raise ServiceError(
            f"{variant.name} is {variant.format}; GGUF outputs are made from the original "
            "safetensors weights or from a GGUF variant.",
            field="variant",
        )
    if fmt == lv.FORMAT_ONNX and variant.format != "safetensors":
        raise ServiceError(
            f"{variant.name} is {variant.format}; ONNX outputs are exported from the original "
            "safetensors weights.",
            field="variant",
        )
    if not variant.files.exists():
        raise ServiceError(f"{variant} has no files to quantize.", field="variant")
    architecture = model.architecture
    if (
        fmt == lv.FORMAT_GGUF
        and variant.format == "safetensors"
        and architecture
        and architecture not in gguf_architectures()
    ):
        raise ServiceError(
            f"{model.repo_id} is a {architecture}, which llama.cpp's converter (llama.cpp "
            f"of llama-cpp-python {converter_version()}) does not convert to GGUF. Pick a "
            "GGUF variant of the model as the source, or another model.",
            field="variant",
        )
    if fmt == lv.FORMAT_ONNX and architecture and not architecture.endswith("ForCausalLM"):
        raise ServiceError(
            f"{model.repo_id} is a {architecture}; the ONNX export handles causal language "
            "models (…ForCausalLM) only.",
            field="variant",
        )
    have = lv.source_bits(variant.format, variant.quantization)
    for level in wanted:
        need = lv.bits(fmt, level)
        if variant.format == lv.FORMAT_GGUF and (
            need > have or level == (variant.quantization or "").upper()
        ):
            raise ServiceError(
                f"{variant.name} is already quantized to {variant.quantization or 'its type'} "
                f"({have:g} bits per weight); {level} ({need:g} bpw) from it cannot be more "
                "precise than its source. Quantize from the original weights or an F16 GGUF.",
                field="levels",
            )


def check_limits(threads: int | None, memory_mb: int | None) -> None:
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise ServiceError(f"threads must be between 1 and {MAX_THREADS}.", field="threads")
    if memory_mb is not None and memory_mb < MIN_MEMORY_MB:
        raise ServiceError(
            f"memory_mb must be at least {MIN_MEMORY_MB} (the tools need that much to start).",
            field="memory_mb",
        )


def plan(
    variant: Variant,
    fmt: str,
    levels: list[str],
    *,
    imatrix: bool = False,
) -> Plan:
    wanted = lv.normalize_levels(fmt, levels)
    check_source(variant, fmt, wanted)
    if fmt == lv.FORMAT_GGUF and not imatrix:
        needing = [level for level in wanted if level in lv.NEEDS_IMATRIX]
        if needing:
            raise ServiceError(
                f"{', '.join(needing)} need an importance matrix: ask for one (imatrix) or "
                "choose a type that does not.",
                field="levels",
            )
    params = parameters_of(variant)
    existing = {v.name: v for v in variant.model.variants.all()}
    reused: dict[str, Variant] = {}
    outputs: dict[str, dict[str, Any]] = {}
    imatrix_levels = [x for x in wanted if imatrix and x in lv.IMATRIX_HELPS]
    for level in wanted:
        name = output_name(variant, fmt, level, level in imatrix_levels)
        found = existing.get(name)
        if found is not None:
            if (found.produced_by or {}).get("source") != "quantize":
                raise ServiceError(
                    f"The model already has a variant named {name} that no quantize job made; "
                    "rename or delete it first.",
                    field="levels",
                )
            reused[level] = found
            continue
        expected = int(params * lv.bits(fmt, level) / 8)
        outputs[level] = {
            "name": name,
            "path": output_path(variant, fmt, level, name),
            "expected_bytes": expected,
        }
    if fmt == lv.FORMAT_GGUF:
        f16 = params * 2
        work = f16 if variant.format == "safetensors" else 0
        ram = max(f16 if variant.format == "safetensors" else variant.size, 1) + RAM_OVERHEAD
    else:
        work = params * 4
        ram = params * 4 * 3 + GB  # torch's export holds the weights and the graph
    produced = sum(int(o["expected_bytes"]) for o in outputs.values())
    disk = int((variant.size + work + produced) * (1 + DISK_MARGIN))
    return Plan(
        fmt=fmt,
        levels=[x for x in wanted if x in outputs],
        reused=reused,
        outputs=outputs,
        parameters=params,
        work_bytes=work,
        disk_bytes=disk,
        ram_bytes=int(ram),
        imatrix_levels=[x for x in imatrix_levels if x in outputs],
    )


def _inventory(node: Node) -> tuple[int | None, int | None]:
    inventory = node.inventory or {}
    disk = (inventory.get("disk") or {}).get("free_bytes")
    ram = (inventory.get("memory") or {}).get("total_bytes")
    return (int(disk) if disk is not None else None, int(ram) if ram is not None else None)


def why_not(node: Node, plan: Plan) -> str | None:
    """Why ``node`` cannot run the job, or None."""
    if node.get_status() != "ready":
        return f"{node.name} is {node.get_status()}"
    if not node.schedulable:
        return f"{node.name} is {', '.join(node.flags)}"
    disk, ram = _inventory(node)
    if disk is not None and disk < plan.disk_bytes:
        return (
            f"{node.name} has {disk / GB:.2f} GB free disk, the job needs about "
            f"{plan.disk_bytes / GB:.2f} GB"
        )
    if ram is not None and ram < plan.ram_bytes:
        return (
            f"{node.name} has {ram / GB:.2f} GB of RAM, the job needs about "
            f"{plan.ram_bytes / GB:.2f} GB"
        )
    return None


def pick_node(plan: Plan, node: Node | None) -> Node:
    if node is not None:
        problem = why_not(node, plan)
        if problem:
            raise ServiceError(f"Cannot quantize on {problem}.", field="node")
        return node
    candidates = list(Node.objects.order_by("name"))
    reasons = []
    fitting = []
    for candidate in candidates:
        problem = why_not(candidate, plan)
        if problem:
            reasons.append(problem)
        else:
            fitting.append(candidate)
    if not fitting:
        detail = "; ".join(reasons[:5]) if reasons else "no node has joined the fleet"
        raise ServiceError(
            f"No node can run this job ({detail}). Free disk on a node, add a node, or ask "
            "for fewer levels.",
            field="node",
        )
    return max(fitting, key=lambda n: (_inventory(n)[0] or 0, -n.pk))
