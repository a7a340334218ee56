"""The footprint estimator against hand-computed figures for real model configs.

The configs in tests/catalog/configs/ are the published config.json files of
meta-llama/Llama-3.2-1B, Qwen/Qwen2.5-0.5B and microsoft/Phi-4-mini-instruct (see the
README there). Every expected number below is worked out by hand in its comment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models_catalog.footprint import (
    RUNTIMES,
    Architecture,
    architecture_from_config,
    default_contexts,
    estimate_parameters,
    footprint,
    footprint_table,
    kv_cache_bytes,
    overhead_bytes,
    runtimes_for,
)

CONFIGS = Path(__file__).parent / "configs"
MiB = 1024 * 1024


def arch(name: str) -> Architecture:
    return architecture_from_config(json.loads((CONFIGS / f"{name}.json").read_text()))


@pytest.fixture(scope="module")
def llama() -> Architecture:
    return arch("llama-3.2-1b")


@pytest.fixture(scope="module")
def qwen() -> Architecture:
    return arch("qwen2.5-0.5b")


@pytest.fixture(scope="module")
def phi() -> Architecture:
    return arch("phi-4-mini")


def test_config_facts(llama, qwen, phi):
    assert (llama.num_layers, llama.hidden_size, llama.num_attention_heads) == (16, 2048, 32)
    assert (llama.num_kv_heads, llama.head_dim, llama.max_context) == (8, 64, 131072)
    assert llama.vocab_size == 128256 and llama.tied_embeddings
    # Qwen2.5 has no head_dim key: 896 / 14 heads = 64
    assert (qwen.num_layers, qwen.num_kv_heads, qwen.head_dim, qwen.max_context) == (
        24,
        2,
        64,
        32768,
    )
    assert qwen.qkv_bias  # Qwen2 projections carry biases without saying so
    # Phi-4-mini: 3072 / 24 heads = 128
    assert (phi.num_layers, phi.num_kv_heads, phi.head_dim, phi.vocab_size) == (32, 8, 128, 200064)


@pytest.mark.parametrize(
    ("name", "context", "kv_type", "expected"),
    [
        # 2 × 16 layers × 8 KV heads × 64 head dim × 8192 × 2 bytes
        ("llama-3.2-1b", 8192, "f16", 268_435_456),
        # same elements (134,217,728) × 34/32 bytes
        ("llama-3.2-1b", 8192, "q8_0", 142_606_336),
        # 2 × 16 × 8 × 64 × 2048 × 2
        ("llama-3.2-1b", 2048, "f16", 67_108_864),
        # the full 131072 context: 2 × 16 × 8 × 64 × 131072 × 2 = 4 GiB
        ("llama-3.2-1b", 131072, "f16", 4_294_967_296),
        # 2 × 24 layers × 2 KV heads × 64 × 32768 × 2
        ("qwen2.5-0.5b", 32768, "f16", 402_653_184),
        # 2 × 24 × 2 × 64 × 2048 = 12,582,912 elements × 34/32
        ("qwen2.5-0.5b", 2048, "q8_0", 13_369_344),
        # 2 × 32 layers × 8 KV heads × 128 × 2048 × 2
        ("phi-4-mini", 2048, "f16", 268_435_456),
        # 2 × 32 × 8 × 128 × 131072 × 2 = 16 GiB
        ("phi-4-mini", 131072, "f16", 17_179_869_184),
        # vLLM's fp8 cache: one byte per element, 2 × 32 × 8 × 128 × 8192
        ("phi-4-mini", 8192, "fp8", 536_870_912),
    ],
)
def test_kv_cache_bytes_exact(name, context, kv_type, expected):
    assert kv_cache_bytes(arch(name), context, kv_type) == expected


@pytest.mark.parametrize(
    ("name", "published"),
    [
        ("llama-3.2-1b", 1.24e9),  # model card: 1.24 B (1,235,814,400)
        ("qwen2.5-0.5b", 0.49e9),  # model card: 0.49 B (494,032,768)
        ("phi-4-mini", 3.84e9),  # model card: 3.8 B; safetensors metadata 3,836,021,760
    ],
)
def test_parameter_estimate_is_within_a_few_percent_of_the_published_count(name, published):
    estimate = estimate_parameters(arch(name))
    assert estimate is not None
    assert abs(estimate - published) / published < 0.02, estimate


@pytest.mark.parametrize(
    ("name", "exact"),
    [
        ("llama-3.2-1b", 1_235_814_400),
        # Qwen2: + q/k/v biases 24 × (896 + 2 × 128) = 27,648 over the plain count
        ("qwen2.5-0.5b", 494_032_768),
        ("phi-4-mini", 3_836_021_760),
    ],
)
def test_parameter_estimate_matches_the_safetensors_counts(name, exact):
    assert estimate_parameters(arch(name)) == exact


def test_parameter_estimate_hand_computed_for_llama(llama):
    # embeddings 128256 × 2048 = 262,668,288 (tied: no separate LM head)
    # per layer: q 2048×2048 + k,v 2×2048×512 + o 2048×2048 = 10,485,760
    #            MLP 3 × 2048 × 8192 = 50,331,648; norms 2 × 2048 = 4,096 → 60,821,504
    # 16 layers = 973,144,064; final norm 2,048 → 1,235,814,400
    assert estimate_parameters(llama) == 1_235_814_400


def test_untied_embeddings_add_an_lm_head(llama):
    untied = Architecture(**{**llama.__dict__, "tied_embeddings": False})
    assert estimate_parameters(untied) == 1_235_814_400 + 128256 * 2048


def test_estimate_needs_layers_hidden_and_vocab():
    assert estimate_parameters(Architecture(num_layers=2, hidden_size=64)) is None
    assert kv_cache_bytes(Architecture(num_layers=2), 2048) is None


def test_runtime_overheads(llama, phi):
    # llama.cpp: 256 MiB + compute buffer 512 tokens × (128256 vocab + 4 × 2048) × 4 bytes
    llamacpp = overhead_bytes(RUNTIMES["llamacpp"], llama)
    assert llamacpp == 256 * MiB + 512 * (128256 + 4 * 2048) * 4 == 547_880_960
    assert overhead_bytes(RUNTIMES["ollama"], llama) == llamacpp  # Ollama runs llama.cpp
    # vLLM: 500 MiB CUDA context + 2048 × (2 × 8192 + 4 × 3072) × 2 + 256 × 200064 × 4
    assert overhead_bytes(RUNTIMES["vllm"], phi) == (
        500 * MiB + 2048 * (2 * 8192 + 4 * 3072) * 2 + 256 * 200064 * 4
    )


def test_footprint_adds_weights_kv_cache_and_overhead(llama):
    weights = 807_694_464  # a Q4_K_M file of about this size
    row = footprint(weights, llama, 8192, "f16", RUNTIMES["llamacpp"])
    assert row.kv_cache_bytes == 268_435_456
    assert row.total_bytes == weights + 268_435_456 + 547_880_960
    quantized_cache = footprint(weights, llama, 8192, "q8_0", RUNTIMES["llamacpp"])
    assert quantized_cache.total_bytes == weights + 142_606_336 + 547_880_960


def test_default_contexts_stop_at_the_models_maximum(llama, qwen):
    assert default_contexts(llama.max_context) == [2048, 8192, 32768, 131072]
    assert default_contexts(qwen.max_context) == [2048, 8192, 32768]
    assert default_contexts(4096) == [2048, 4096]
    assert default_contexts(None) == [2048, 8192, 32768]


def test_table_rows_per_runtime_context_and_cache_type(llama):
    rows = footprint_table(1000, llama, [2048, 8192], runtimes_for("gguf"))
    keys = [(r.runtime, r.context, r.kv_cache_type) for r in rows]
    assert keys == [
        ("llamacpp", 2048, "f16"),
        ("llamacpp", 2048, "q8_0"),
        ("llamacpp", 8192, "f16"),
        ("llamacpp", 8192, "q8_0"),
        ("ollama", 2048, "f16"),
        ("ollama", 2048, "q8_0"),
        ("ollama", 8192, "f16"),
        ("ollama", 8192, "q8_0"),
    ]
    assert [r.key for r in runtimes_for("safetensors")] == ["vllm"]
    assert [r.key for r in runtimes_for("onnx")] == ["onnxruntime"]
