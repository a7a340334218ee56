"""Which ready nodes can run a variant now, per context length, and why not."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from core.errors import ServiceError
from fleet.choices import NodeState
from fleet.models import Node
from models_catalog.fits import fits_on, parse_contexts, reserved_bytes, variant_weights_bytes
from models_catalog.models import CatalogModel, ModelFile, Variant

pytestmark = pytest.mark.django_db
GB = 1_000_000_000
LLAMA = json.loads((Path(__file__).parent / "configs" / "llama-3.2-1b.json").read_text())
_ids = itertools.count()


def make_model() -> CatalogModel:
    return CatalogModel.objects.create(
        repo_id=f"meta-llama/Llama-3.2-1B-{next(_ids)}",
        commit_sha="a" * 40,
        config=LLAMA,
        num_layers=16,
        hidden_size=2048,
        num_attention_heads=32,
        num_kv_heads=8,
        head_dim=64,
        max_context=131072,
        vocab_size=128256,
        parameter_count=1_235_814_400,
        licence="llama3.2",
    )


def make_variant(model: CatalogModel, fmt: str, path: str, size: int) -> Variant:
    f = ModelFile.objects.create(model=model, path=path, size=size, sha256="b" * 64)
    variant = Variant.objects.create(
        model=model, name=path, format=fmt, size=size, produced_by={"source": "upstream"}
    )
    variant.files.set([f])
    return variant


def node(name: str, *, ram: int | None = None, gpus: list[int] | None = None, **flags) -> Node:
    inventory: dict = {}
    if ram is not None:
        inventory["memory"] = {"total_bytes": ram * 2, "available_bytes": ram}
    if gpus is not None:
        inventory["gpus"] = [
            {"index": i, "memory_total_bytes": 80 * GB, "memory_free_bytes": free}
            for i, free in enumerate(gpus)
        ]
    defaults = {
        "state": NodeState.READY,
        "last_heartbeat_at": timezone.now(),
        "inventory": inventory,
        "credential_hash": f"h-{name}",
    }
    defaults.update(flags)
    return Node.objects.create(name=name, **defaults)


def cells(matrix: dict, name: str) -> list[dict]:
    return next(row["cells"] for row in matrix["nodes"] if row["name"] == name)


def test_cpu_runtime_needs_free_ram_and_says_how_much():
    variant = make_variant(make_model(), "gguf", "Llama-3.2-1B-Q4_K_M.gguf", 807_694_464)
    node("big", ram=16 * GB)
    node("small", ram=1 * GB)
    node("cordoned", ram=16 * GB, cordoned=True)
    node("draining", ram=16 * GB, draining=True)
    node("gone", ram=16 * GB, last_heartbeat_at=timezone.now() - timedelta(hours=1))
    node("new", state=NodeState.PENDING, last_heartbeat_at=None)
    node("blank")
    matrix = fits_on(variant, [2048, 131072])
    assert matrix["runtime"] == "llamacpp" and matrix["device"] == "cpu"
    # weights 807,694,464 + KV 2×16×8×64×2048×2 = 67,108,864 + overhead 547,880,960
    assert matrix["needed_bytes"][0] == 807_694_464 + 67_108_864 + 547_880_960
    assert [c["fits"] for c in cells(matrix, "big")] == [True, True]
    small = cells(matrix, "small")
    assert not small[0]["fits"]
    assert small[0]["reason"] == "needs 1.4 GB RAM, node has 1.0 GB free"
    assert cells(matrix, "cordoned")[0]["reason"] == "node is cordoned"
    assert cells(matrix, "draining")[0]["reason"] == "node is draining"
    assert cells(matrix, "gone")[0]["reason"] == "node is unreachable"
    assert cells(matrix, "new")[0]["reason"] == "node has not sent a heartbeat yet"
    assert cells(matrix, "blank")[0]["reason"] == "node has reported no memory figures yet"
    # at 131072 tokens the f16 cache alone is 4.3 GB; a q8_0 cache is smaller
    q8 = fits_on(variant, [131072], kv_cache_type="q8_0")
    assert q8["needed_bytes"][0] < matrix["needed_bytes"][1]


def test_gpu_runtime_needs_one_gpu_with_enough_free_memory():
    model = make_model()
    variant = make_variant(model, "safetensors", "model.safetensors", 2_471_645_608)
    node("h100", gpus=[1 * GB, 40 * GB])
    node("small-gpus", gpus=[2 * GB, 3_000_000_000])
    node("cpu-only", ram=64 * GB)
    matrix = fits_on(variant, [8192])
    assert matrix["runtime"] == "vllm" and matrix["device"] == "gpu"
    (ok,) = cells(matrix, "h100")
    assert ok["fits"] and ok["gpu_index"] == 1
    (refused,) = cells(matrix, "small-gpus")
    need = matrix["needed_bytes"][0]
    assert refused["reason"] == (f"needs {need / GB:.1f} GB VRAM, largest free GPU has 3.0 GB")
    assert cells(matrix, "cpu-only")[0]["reason"] == "node has no GPU"


def test_reservations_are_zero_until_deployments_exist():
    n = node("any", ram=GB)
    assert reserved_bytes(n, "cpu") == 0 and reserved_bytes(n, "gpu", 0) == 0


def test_bad_runtime_cache_type_and_contexts_are_refused():
    variant = make_variant(make_model(), "gguf", "m-Q8_0.gguf", 1000)
    with pytest.raises(ServiceError):
        fits_on(variant, [2048], runtime="vllm")
    with pytest.raises(ServiceError):
        fits_on(variant, [2048], kv_cache_type="fp8")
    with pytest.raises(ServiceError):
        parse_contexts("2048,lots", variant.model)
    with pytest.raises(ServiceError):
        parse_contexts("0", variant.model)
    assert parse_contexts("8192, 2048,8192", variant.model) == [8192, 2048]
    assert parse_contexts("", variant.model) == [2048, 8192, 32768, 131072]


def test_weights_come_from_files_else_parameters_times_bpw():
    model = make_model()
    variant = make_variant(model, "gguf", "m-Q4_K_M.gguf", 800)
    assert variant_weights_bytes(variant) == 800
    planned = Variant.objects.create(
        model=model, name="planned", format="gguf", quantization="Q4_K_M", bits_per_weight=4.85
    )
    assert variant_weights_bytes(planned) == round(1_235_814_400 * 4.85 / 8)
