"""Footprints of catalog variants, and which nodes can run them now (the fits-on matrix).

Free memory and what placed replicas reserve are the fleet's model of capacity
(:mod:`fleet.capacity`), the one the scheduler (deployments.placement) places by.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.errors import ServiceError
from fleet.capacity import CPU, GPU, gb, node_gpus, node_ram, reserved_bytes
from fleet.choices import NodeState
from fleet.models import Node
from models_catalog.footprint import (
    KV_CACHE_TYPES,
    RUNTIMES,
    Architecture,
    Footprint,
    Runtime,
    architecture_from_config,
    default_contexts,
    footprint,
    footprint_table,
    runtimes_for,
)
from models_catalog.models import CatalogModel, Variant
from models_catalog.variants import weights_bytes

MAX_CONTEXT = 10_000_000


def model_architecture(model: CatalogModel) -> Architecture:
    """The stored facts of ``model``, completed from its config.json where it has one."""
    base = architecture_from_config(model.config) if model.config else Architecture()
    return Architecture(
        architecture=model.architecture or base.architecture,
        model_type=model.model_type or base.model_type,
        num_layers=model.num_layers or base.num_layers,
        hidden_size=model.hidden_size or base.hidden_size,
        num_attention_heads=model.num_attention_heads or base.num_attention_heads,
        num_kv_heads=model.num_kv_heads or base.num_kv_heads,
        head_dim=model.head_dim or base.head_dim,
        max_context=model.max_context or base.max_context,
        vocab_size=model.vocab_size or base.vocab_size,
        intermediate_size=base.intermediate_size,
        tied_embeddings=base.tied_embeddings,
        num_experts=base.num_experts,
        qkv_bias=base.qkv_bias,
    )


def variant_weights_bytes(variant: Variant) -> int:
    """Bytes of the variant's weight files; else parameters × bits per weight / 8."""
    measured = weights_bytes(variant.files.all())
    if measured:
        return measured
    params, bpw = variant.model.parameter_count, variant.bits_per_weight
    return round(params * bpw / 8) if params and bpw else variant.size


def parse_contexts(raw: str | Iterable[Any] | None, model: CatalogModel) -> list[int]:
    """``"2048,8192"`` (or a list) into context lengths; the defaults when empty."""
    if raw is None or raw == "":
        return default_contexts(model_architecture(model).max_context)
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    contexts: list[int] = []
    for item in items:
        try:
            value = int(str(item).strip())
        except ValueError:
            raise ServiceError(
                f"{item!r} is not a context length; give whole numbers such as 2048,8192.",
                field="contexts",
            ) from None
        if not 1 <= value <= MAX_CONTEXT:
            raise ServiceError(
                f"Context lengths must be between 1 and {MAX_CONTEXT}.", field="contexts"
            )
        if value not in contexts:
            contexts.append(value)
    return contexts[:16]


def variant_footprints(variant: Variant, contexts: list[int] | None = None) -> list[Footprint]:
    """Per runtime of the variant's format × context × KV cache type."""
    arch = model_architecture(variant.model)
    contexts = contexts or default_contexts(arch.max_context)
    return footprint_table(
        variant_weights_bytes(variant), arch, contexts, runtimes_for(variant.format)
    )


def _unschedulable(node: Node) -> str | None:
    status = node.get_status()
    if status == NodeState.UNREACHABLE:
        return "node is unreachable"
    if status == NodeState.PENDING:
        return "node has not sent a heartbeat yet"
    if node.maintenance:
        return "node is in maintenance"
    if node.draining:
        return "node is draining"
    if node.cordoned:
        return "node is cordoned"
    return None


def _cell(node: Node, runtime: Runtime, need: Footprint) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "context": need.context,
        "fits": False,
        "needed_bytes": need.total_bytes,
        "free_bytes": None,
        "gpu_index": None,
        "reason": "",
    }
    reason = _unschedulable(node)
    if reason is None and need.total_bytes is None:
        reason = "footprint unknown: the model's config lacks layers, KV heads or head dim"
    elif reason is None and runtime.device == CPU:
        available, _total = node_ram(node)
        if available is None:
            reason = "node has reported no memory figures yet"
        else:
            free = available - reserved_bytes(node, CPU)
            cell["free_bytes"] = free
            if need.total_bytes > free:  # type: ignore[operator]
                reason = f"needs {gb(need.total_bytes)} RAM, node has {gb(free)} free"  # type: ignore[arg-type]
    elif reason is None:
        gpus = [(index, free) for index, free, _total in node_gpus(node)]
        if not gpus:
            reason = "node has no GPU"
        else:
            free_by_gpu = [(free - reserved_bytes(node, GPU, idx), idx) for idx, free in gpus]
            best, index = max(free_by_gpu)
            cell["free_bytes"], cell["gpu_index"] = best, index
            if need.total_bytes > best:  # type: ignore[operator]
                reason = (
                    f"needs {gb(need.total_bytes)} VRAM, "  # type: ignore[arg-type]
                    f"largest free GPU has {gb(best)}"
                )
    cell["fits"] = reason is None
    cell["reason"] = reason or ""
    return cell


def fits_on(
    variant: Variant,
    contexts: list[int] | None = None,
    *,
    kv_cache_type: str = "f16",
    runtime: str | None = None,
    nodes: Iterable[Node] | None = None,
) -> dict[str, Any]:
    """For each node and context: can ``variant`` run there now, and if not, why not.

    CPU runtimes need the footprint in free RAM (inventory ``memory.available_bytes``);
    GPU runtimes in one GPU's free memory (``gpus[].memory_free_bytes``), both minus what
    placed replicas reserve (:func:`fleet.capacity.reserved_bytes`).
    """
    choices = runtimes_for(variant.format)
    if runtime:
        if runtime not in RUNTIMES or RUNTIMES[runtime] not in choices:
            names = ", ".join(r.key for r in choices) or "none"
            raise ServiceError(
                f"{variant.format} variants run on: {names}; not {runtime!r}.", field="runtime"
            )
        chosen = RUNTIMES[runtime]
    elif choices:
        chosen = choices[0]
    else:
        raise ServiceError(f"No runtime serves {variant.format} variants.", field="runtime")
    if kv_cache_type not in chosen.kv_cache_types:
        raise ServiceError(
            f"{chosen.label} caches keys and values as {', '.join(chosen.kv_cache_types)}; "
            f"not {kv_cache_type!r}.",
            field="kv_cache_type",
        )
    assert kv_cache_type in KV_CACHE_TYPES
    arch = model_architecture(variant.model)
    contexts = contexts or default_contexts(arch.max_context)
    weights = variant_weights_bytes(variant)
    needs = [footprint(weights, arch, context, kv_cache_type, chosen) for context in contexts]
    rows = [
        {
            "node": node.pk,
            "name": node.name,
            "status": node.get_status(),
            "cells": [_cell(node, chosen, need) for need in needs],
        }
        for node in (nodes if nodes is not None else Node.objects.all())
    ]
    return {
        "variant": variant.pk,
        "runtime": chosen.key,
        "device": chosen.device,
        "kv_cache_type": kv_cache_type,
        "contexts": contexts,
        "needed_bytes": [need.total_bytes for need in needs],
        "nodes": rows,
    }
