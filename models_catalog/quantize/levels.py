"""Quantization levels a job may ask for, per target format, and what they cost in bits.

GGUF: the types ``llama-quantize`` accepts (its QUANT_OPTIONS; aliases such as ``Q4_K`` are
resolved to the full name). ONNX: ``int8`` (dynamic quantization) and ``int4`` (MatMul
n-bits, weight-only). Pure functions, no database.
"""

from __future__ import annotations

from core.errors import ServiceError
from models_catalog.variants import GGUF_BPW, ONNX_BPW

FORMAT_GGUF = "gguf"
FORMAT_ONNX = "onnx"
FORMATS = (FORMAT_GGUF, FORMAT_ONNX)

GGUF_LEVELS = (
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_1",
    "Q5_0",
    "Q4_K_M",
    "Q4_K_S",
    "Q4_1",
    "Q4_0",
    "IQ4_NL",
    "IQ4_XS",
    "Q3_K_L",
    "Q3_K_M",
    "Q3_K_S",
    "IQ3_M",
    "IQ3_S",
    "IQ3_XS",
    "IQ3_XXS",
    "Q2_K",
    "Q2_K_S",
    "IQ2_M",
    "IQ2_S",
    "IQ2_XS",
    "IQ2_XXS",
    "IQ1_M",
    "IQ1_S",
    "TQ2_0",
    "TQ1_0",
    "F16",
    "BF16",
    "F32",
)
GGUF_ALIASES = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q3_K": "Q3_K_M", "FP16": "F16"}
# llama-quantize refuses these without an importance matrix (or gives very poor results).
NEEDS_IMATRIX = frozenset({"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M", "Q2_K_S"})
# The low-bit types an importance matrix helps (used for them when a job asks for one).
IMATRIX_HELPS = frozenset(
    {level for level in GGUF_LEVELS if level.startswith(("IQ", "Q2", "Q3", "Q4"))}
)
ONNX_LEVELS = ("int8", "int4")
SOURCE_BITS = {"F32": 32.0, "FP32": 32.0, "F16": 16.0, "BF16": 16.0, "FP16": 16.0}


def bits(fmt: str, level: str) -> float:
    if fmt == FORMAT_ONNX:
        return ONNX_BPW.get(level.lower(), 32.0)
    return GGUF_BPW.get(level.upper(), 16.0)


def normalize_levels(fmt: str, levels: list[str]) -> list[str]:
    """The requested levels, canonical and de-duplicated; a clear error for unknown ones."""
    if fmt not in FORMATS:
        raise ServiceError(
            f"Unknown target format {fmt!r}: use 'gguf' (llama.cpp) or 'onnx' (ONNX Runtime).",
            field="format",
        )
    if not levels:
        raise ServiceError("Name at least one quantization level.", field="levels")
    known = GGUF_LEVELS if fmt == FORMAT_GGUF else ONNX_LEVELS
    out: list[str] = []
    for raw in levels:
        level = str(raw).strip()
        level = (
            GGUF_ALIASES.get(level.upper(), level.upper()) if fmt == FORMAT_GGUF else level.lower()
        )
        if level not in known:
            raise ServiceError(
                f"{raw!r} is not a {fmt.upper()} quantization type this fleet knows. Choose "
                f"from: {', '.join(known)}.",
                field="levels",
            )
        if level not in out:
            out.append(level)
    return out


def source_bits(fmt: str, quantization: str) -> float:
    """Bits per weight of a source variant (safetensors: its dtype; GGUF: its type)."""
    quant = (quantization or "").upper()
    if fmt == "safetensors":
        return SOURCE_BITS.get(quant, 16.0)
    if fmt == FORMAT_GGUF:
        return GGUF_BPW.get(quant, 16.0) if quant else 16.0
    return ONNX_BPW.get(quant.lower(), 32.0) if quant else 32.0
