"""Memory footprint of a variant at a context length: weights + KV cache + runtime overhead.

Pure functions; docs/footprint.md explains every figure. All sizes are bytes.

    total = weights + KV cache + runtime overhead
    KV cache = 2 (K and V) × layers × KV heads × head dim × context × bytes per element
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

MiB = 1024 * 1024

# Bytes per cached element. q8_0 stores blocks of 32 int8 values plus one f16 scale:
# 34 bytes per 32 elements. fp8 is vLLM's 8-bit cache (no scale per element).
KV_CACHE_TYPES: dict[str, float] = {"f16": 2.0, "q8_0": 34 / 32, "fp8": 1.0}

STANDARD_CONTEXTS = (2048, 8192, 32768)

# MLPs with two matrices (up, down) instead of the gated three (gate, up, down).
NON_GATED_MLP = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "starcoder2", "bert"}
# Families whose attention projections carry biases without saying so in config.json.
QKV_BIAS = {"qwen2", "qwen2_moe", "qwen2_vl", "qwen2_5_vl"}


@dataclass(frozen=True)
class Architecture:
    """What the footprint and the parameter estimate need from a model's config."""

    architecture: str = ""
    model_type: str = ""
    num_layers: int | None = None
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    max_context: int | None = None
    vocab_size: int | None = None
    intermediate_size: int | None = None
    tied_embeddings: bool = False
    num_experts: int | None = None
    qkv_bias: bool = False

    @property
    def complete_for_kv(self) -> bool:
        return bool(self.num_layers and self.num_kv_heads and self.head_dim)


def _first(config: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = config.get(key)
        if value is not None:
            return value
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, list):  # per-layer values (some GGUF and hybrid configs)
        value = max((v for v in value if isinstance(v, int | float)), default=None)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def architecture_from_config(config: dict[str, Any]) -> Architecture:
    """Facts from a Hugging Face config.json (text_config of multimodal models wins)."""
    text = config.get("text_config")
    merged = {**config, **text} if isinstance(text, dict) else dict(config)
    layers = _int(_first(merged, "num_hidden_layers", "n_layer", "num_layers", "n_layers"))
    hidden = _int(_first(merged, "hidden_size", "n_embd", "d_model", "dim"))
    heads = _int(_first(merged, "num_attention_heads", "n_head", "num_heads", "n_heads"))
    kv_heads = _int(_first(merged, "num_key_value_heads", "num_kv_heads", "n_kv_heads"))
    if kv_heads is None and merged.get("multi_query"):
        kv_heads = 1
    head_dim = _int(merged.get("head_dim"))
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    architectures = config.get("architectures") or []
    model_type = str(merged.get("model_type") or config.get("model_type") or "")
    tied = merged.get("tie_word_embeddings", config.get("tie_word_embeddings"))
    return Architecture(
        architecture=str(architectures[0]) if architectures else "",
        model_type=model_type,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads or heads,
        head_dim=head_dim,
        max_context=_int(
            _first(merged, "max_position_embeddings", "n_positions", "max_sequence_length")
        ),
        vocab_size=_int(merged.get("vocab_size")),
        intermediate_size=_int(_first(merged, "intermediate_size", "n_inner", "ffn_dim")),
        tied_embeddings=bool(tied),
        num_experts=_int(_first(merged, "num_local_experts", "num_experts", "n_routed_experts")),
        qkv_bias=bool(merged.get("attention_bias")) or model_type in QKV_BIAS,
    )


def architecture_from_gguf(metadata: dict[str, Any], array_lengths: dict[str, int]) -> Architecture:
    """Facts from a GGUF header (``<arch>.block_count``, ``<arch>.attention.head_count``, …)."""
    arch = str(metadata.get("general.architecture") or "")

    def key(name: str) -> Any:
        return metadata.get(f"{arch}.{name}")

    hidden = _int(key("embedding_length"))
    heads = _int(key("attention.head_count"))
    head_dim = _int(key("attention.key_length"))
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    vocab = _int(key("vocab_size")) or array_lengths.get("tokenizer.ggml.tokens")
    return Architecture(
        architecture=arch,
        model_type=arch,
        num_layers=_int(key("block_count")),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=_int(key("attention.head_count_kv")) or heads,
        head_dim=head_dim,
        max_context=_int(key("context_length")),
        vocab_size=vocab,
        intermediate_size=_int(key("feed_forward_length")),
        num_experts=_int(key("expert_count")),
    )


def estimate_parameters(arch: Architecture) -> int | None:
    """Parameters of a decoder-only transformer from its config (an estimate; said so).

    Embeddings + per layer (attention Q, K, V, O [+ biases], MLP with 2 or 3 matrices,
    two norms) + final norm + LM head unless tied to the embeddings.
    """
    layers, hidden, vocab = arch.num_layers, arch.hidden_size, arch.vocab_size
    if not (layers and hidden and vocab):
        return None
    heads = arch.num_attention_heads or 1
    kv_heads = arch.num_kv_heads or heads
    head_dim = arch.head_dim or hidden // heads
    q_width, kv_width = heads * head_dim, kv_heads * head_dim
    attention = hidden * q_width + 2 * hidden * kv_width + q_width * hidden
    if arch.qkv_bias:
        attention += q_width + 2 * kv_width
    intermediate = arch.intermediate_size or 4 * hidden
    matrices = 2 if arch.model_type in NON_GATED_MLP else 3
    mlp = matrices * hidden * intermediate
    if arch.num_experts:
        mlp = mlp * arch.num_experts + hidden * arch.num_experts  # experts + router
    per_layer = attention + mlp + 2 * hidden
    embeddings = vocab * hidden
    lm_head = 0 if arch.tied_embeddings else vocab * hidden
    return embeddings + layers * per_layer + hidden + lm_head


def kv_cache_bytes(arch: Architecture, context: int, kv_cache_type: str = "f16") -> int | None:
    """2 × layers × KV heads × head dim × context × bytes per element (None when unknown)."""
    if not arch.complete_for_kv:
        return None
    per_element = KV_CACHE_TYPES[kv_cache_type]
    elements = 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim * context  # type: ignore[operator]
    return round(elements * per_element)


@dataclass(frozen=True)
class Runtime:
    key: str
    label: str
    device: str  # "cpu": fits in RAM; "gpu": fits in one GPU's memory
    base_bytes: int
    kv_cache_types: tuple[str, ...]
    note: str


# The per-runtime overhead (docs/footprint.md explains each figure).
RUNTIMES: dict[str, Runtime] = {
    "llamacpp": Runtime(
        "llamacpp",
        "llama.cpp (CPU)",
        "cpu",
        256 * MiB,
        ("f16", "q8_0"),
        "256 MiB process and buffers + compute buffer for a 512-token batch",
    ),
    "ollama": Runtime(
        "ollama",
        "Ollama (CPU)",
        "cpu",
        256 * MiB,
        ("f16", "q8_0"),
        "runs llama.cpp: same as llama.cpp",
    ),
    "vllm": Runtime(
        "vllm",
        "vLLM (GPU)",
        "gpu",
        500 * MiB,
        ("f16", "fp8"),
        "500 MiB CUDA context + activation reserve for 2048 batched tokens and 256 sequences",
    ),
    "onnxruntime": Runtime(
        "onnxruntime",
        "ONNX Runtime (CPU)",
        "cpu",
        128 * MiB,
        ("f16",),
        "128 MiB session and server + activations for a 512-token chunk",
    ),
}
RUNTIMES_FOR_FORMAT: dict[str, tuple[str, ...]] = {
    "gguf": ("llamacpp", "ollama"),
    "safetensors": ("vllm",),
    "onnx": ("onnxruntime",),
}

LLAMACPP_UBATCH = 512
VLLM_BATCHED_TOKENS = 2048
VLLM_MAX_SEQS = 256


def overhead_bytes(runtime: Runtime, arch: Architecture) -> int:
    """The runtime's fixed cost plus its working buffers (independent of the context)."""
    hidden = arch.hidden_size or 0
    vocab = arch.vocab_size or 0
    if runtime.key == "vllm":
        intermediate = arch.intermediate_size or 4 * hidden
        activations = VLLM_BATCHED_TOKENS * (2 * intermediate + 4 * hidden) * 2
        logits = VLLM_MAX_SEQS * vocab * 4
        return runtime.base_bytes + activations + logits
    # llama.cpp-style compute buffer: f32 logits and activations for one micro-batch.
    return runtime.base_bytes + LLAMACPP_UBATCH * (vocab + 4 * hidden) * 4


@dataclass(frozen=True)
class Footprint:
    runtime: str
    device: str
    context: int
    kv_cache_type: str
    weights_bytes: int
    kv_cache_bytes: int | None
    overhead_bytes: int
    total_bytes: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def footprint(
    weights_bytes: int, arch: Architecture, context: int, kv_cache_type: str, runtime: Runtime
) -> Footprint:
    kv = kv_cache_bytes(arch, context, kv_cache_type)
    overhead = overhead_bytes(runtime, arch)
    return Footprint(
        runtime=runtime.key,
        device=runtime.device,
        context=context,
        kv_cache_type=kv_cache_type,
        weights_bytes=weights_bytes,
        kv_cache_bytes=kv,
        overhead_bytes=overhead,
        total_bytes=None if kv is None else weights_bytes + kv + overhead,
    )


def default_contexts(max_context: int | None) -> list[int]:
    """2k, 8k, 32k (those within the model's maximum) and the maximum itself."""
    contexts = [c for c in STANDARD_CONTEXTS if max_context is None or c <= max_context]
    if max_context and max_context not in contexts:
        contexts.append(max_context)
    return contexts


def runtimes_for(fmt: str) -> list[Runtime]:
    return [RUNTIMES[key] for key in RUNTIMES_FOR_FORMAT.get(fmt, ())]


def footprint_table(
    weights_bytes: int, arch: Architecture, contexts: Iterable[int], runtimes: Iterable[Runtime]
) -> list[Footprint]:
    """One row per runtime × context × KV cache type the runtime supports."""
    return [
        footprint(weights_bytes, arch, context, kv_type, runtime)
        for runtime in runtimes
        for context in contexts
        for kv_type in runtime.kv_cache_types
    ]
