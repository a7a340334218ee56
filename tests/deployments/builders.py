"""Nodes with written inventories and a realistic catalog model for the deployment tests.

The model is Qwen2.5-0.5B-Instruct as its config.json describes it (24 layers, 896 hidden,
14 heads, 2 KV heads of 64, 151,936 tokens, 32k context), with a Q4_K_M GGUF variant
(491 MB) and the original bf16 safetensors (988 MB), so footprints are the real ones.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from core.history import ChangeContext
from core.models import User
from deployments import services
from deployments.models import Deployment
from fleet.choices import NodeState
from fleet.models import Node
from models_catalog.models import CatalogModel, ModelFile, NodeModel, Variant

GB = 10**9
GiB = 1024**3

QWEN_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
}


def qwen(repo_id: str = "Qwen/Qwen2.5-0.5B-Instruct", licence: str = "apache-2.0") -> CatalogModel:
    existing = CatalogModel.objects.filter(repo_id=repo_id).first()
    if existing is not None:
        return existing
    model = CatalogModel.objects.create(
        repo_id=repo_id,
        commit_sha="7ae557604adf67be50417f59c2c2f167def9a775",
        architecture="Qwen2ForCausalLM",
        model_type="qwen2",
        config=QWEN_CONFIG,
        num_layers=24,
        hidden_size=896,
        num_attention_heads=14,
        num_kv_heads=2,
        head_dim=64,
        max_context=32768,
        vocab_size=151936,
        parameter_count=494_032_768,
        parameter_source="safetensors",
        licence=licence,
    )
    return model


def gguf_variant(model: CatalogModel | None = None, *, size: int = 491_400_032) -> Variant:
    model = model or qwen()
    path = "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    existing = Variant.objects.filter(model=model, name=path).first()
    if existing is not None:
        return existing
    weights = ModelFile.objects.create(model=model, path=path, size=size, sha256="a" * 64)
    variant = Variant.objects.create(
        model=model, name=path, format="gguf", quantization="Q4_K_M", size=size
    )
    variant.files.set([weights])
    return variant


def safetensors_variant(model: CatalogModel | None = None) -> Variant:
    model = model or qwen()
    existing = Variant.objects.filter(model=model, name="original").first()
    if existing is not None:
        return existing
    weights = ModelFile.objects.create(
        model=model, path="model.safetensors", size=988_097_824, sha256="b" * 64
    )
    config = ModelFile.objects.create(model=model, path="config.json", size=659, sha256="c" * 64)
    variant = Variant.objects.create(
        model=model, name="original", format="safetensors", size=weights.size + config.size
    )
    variant.files.set([weights, config])
    return variant


def gpu(index: int, total: int, free: int) -> dict[str, Any]:
    return {
        "index": index,
        "name": "NVIDIA L4",
        "uuid": f"GPU-{index:08d}",
        "memory_total_bytes": total,
        "memory_free_bytes": free,
        "memory_used_bytes": total - free,
    }


def node(
    name: str,
    *,
    ram_total: int = 16 * GB,
    ram_free: int | None = None,
    gpus: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    state: str = NodeState.READY,
    **flags: Any,
) -> Node:
    return Node.objects.create(
        name=name,
        state=state,
        last_heartbeat_at=timezone.now(),
        credential_prefix="slmn_x",
        credential_hash=f"hash-{name}",
        labels=labels or {},
        inventory={
            "host": {"hostname": f"{name}.example.net"},
            "cpu": {"cores": 8},
            "memory": {
                "total_bytes": ram_total,
                "available_bytes": ram_total if ram_free is None else ram_free,
            },
            "gpus": gpus or [],
        },
        **flags,
    )


def holds(node: Node, variant: Variant) -> NodeModel:
    return NodeModel.objects.create(
        node=node, variant=variant, commit_sha=variant.model.commit_sha, state="present"
    )


def spec(variant: Variant, **overrides: Any) -> dict[str, Any]:
    runtime = "llamacpp" if variant.format == "gguf" else "vllm"
    return {"variant": variant.pk, "runtime": runtime, **overrides}


def deploy(user: User, name: str, variant: Variant, **overrides: Any) -> Deployment:
    return services.create_deployment(
        ChangeContext.for_user(user), name, spec(variant, **overrides), reason="test"
    )


def bare_deployment(user: User, name: str, variant: Variant, **overrides: Any) -> Deployment:
    """A deployment without what its first reconcile pass made (replicas, rollout): for tests
    that lay out replica and rollout rows by hand."""
    from core.jobs import Job

    deployment = deploy(user, name, variant, **overrides)
    jobs = [pk for pk in deployment.replicas.values_list("download_job_id", flat=True) if pk]
    deployment.replicas.all().delete()
    deployment.rollouts.all().delete()
    Job.objects.filter(pk__in=jobs).delete()
    return deployment
