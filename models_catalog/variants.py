"""Which deployable variants a repository holds, and what their quantization costs in bits.

Pure functions over a file listing (path and size): no database, no network. The importer
turns the :class:`VariantSpec` values into ``Variant`` rows.

- the original weights (``*.safetensors``) with config and tokenizer files: one variant;
- every GGUF file (shards ``-00001-of-00003.gguf`` grouped) : one variant each, with the
  quantization type parsed from the file name;
- every folder holding ``*.onnx`` files: one variant per folder (or one per quantization
  when the folder holds several, as transformers.js repositories do).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from models_catalog.choices import VariantFormat

# Nominal bits per weight of llama.cpp's quantization types (file types for the K-quant
# mixes). Fixed-size types are exact (block bytes × 8 / block size: Q8_0 = 34 × 8 / 32 = 8.5);
# the mixes (Q4_K_M, …) and i-quants are the figures llama.cpp publishes for 7B-class
# models. The actual figure of a file (size × 8 / parameters) is computed when the
# parameter count is known; this table is the fallback and the comparison.
GGUF_BPW: dict[str, float] = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_K_M": 5.69,
    "Q5_K_S": 5.54,
    "Q5_1": 6.0,
    "Q5_0": 5.5,
    "Q4_K_M": 4.85,
    "Q4_K_S": 4.58,
    "Q4_1": 5.0,
    "Q4_0": 4.5,
    "Q4_0_4_4": 4.5,
    "Q4_0_4_8": 4.5,
    "Q4_0_8_8": 4.5,
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "Q3_K_S": 3.5,
    "Q2_K": 2.63,
    "Q2_K_S": 2.56,
    "IQ4_NL": 4.5,
    "IQ4_XS": 4.25,
    "IQ3_M": 3.66,
    "IQ3_S": 3.44,
    "IQ3_XS": 3.3,
    "IQ3_XXS": 3.06,
    "IQ2_M": 2.7,
    "IQ2_S": 2.5,
    "IQ2_XS": 2.31,
    "IQ2_XXS": 2.06,
    "IQ1_M": 1.75,
    "IQ1_S": 1.56,
    "TQ2_0": 2.06,
    "TQ1_0": 1.69,
    "MXFP4": 4.25,
}
GGUF_ALIASES = {"FP16": "F16", "FP32": "F32", "MXFP4_MOE": "MXFP4"}

# ONNX quantization names as repositories spell them, and their nominal bits per weight
# (4-bit formats carry per-block scales, hence 4.5).
ONNX_BPW: dict[str, float] = {
    "fp32": 32.0,
    "fp16": 16.0,
    "bf16": 16.0,
    "int8": 8.0,
    "uint8": 8.0,
    "int4": 4.5,
    "uint4": 4.5,
    "q4f16": 4.5,
    "bnb4": 4.5,
}
ONNX_ALIASES = {"quantized": "int8", "q8": "int8", "q4": "int4", "float16": "fp16"}

SAFETENSORS_BPW = {"F32": 32.0, "F16": 16.0, "BF16": 16.0, "F8_E4M3": 8.0, "F8_E5M2": 8.0}
TORCH_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}

_SEP = r"[-_.]"


def _name_pattern(names: Iterable[str]) -> re.Pattern[str]:
    alternatives = sorted(names, key=len, reverse=True)
    body = "|".join(_SEP.join(re.escape(part) for part in name.split("_")) for name in alternatives)
    return re.compile(rf"(?:^|{_SEP}|/)({body})(?={_SEP}|$)", re.IGNORECASE)


_GGUF_QUANT = _name_pattern([*GGUF_BPW, *GGUF_ALIASES])
_ONNX_QUANT = _name_pattern([*ONNX_BPW, *ONNX_ALIASES])
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})$")
_ONNX_DATA = re.compile(r"\.onnx(?:[._]data(?:_\d+)?)?$")

CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = re.compile(
    r"^(tokenizer(\.json|\.model|_config\.json)|special_tokens_map\.json|added_tokens\.json|"
    r"vocab\.(json|txt)|merges\.txt|chat_template\.(jinja|json)|spiece\.model|"
    r"preprocessor_config\.json|processor_config\.json)$"
)
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".onnx", ".onnx_data", ".onnx.data")


def _canonical(match: re.Match[str]) -> str:
    return re.sub(_SEP, "_", match.group(1)).upper()


def parse_gguf_quant(filename: str) -> str:
    """The llama.cpp quantization type named in a GGUF file name ('' when none)."""
    stem = posixpath.basename(filename)
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    stem = _SHARD.sub("", stem)
    matches = list(_GGUF_QUANT.finditer(stem))
    if not matches:
        return ""
    name = _canonical(matches[-1])
    return GGUF_ALIASES.get(name, name)


def parse_onnx_quant(name: str) -> str:
    """The ONNX quantization in a folder or file name (int8, int4, fp16, …; '' when none)."""
    matches = list(_ONNX_QUANT.finditer(re.sub(r"\.onnx$", "", name, flags=re.IGNORECASE)))
    if not matches:
        return ""
    quant = matches[-1].group(1).lower()
    return ONNX_ALIASES.get(quant, quant)


def nominal_bpw(fmt: str, quantization: str) -> float | None:
    """The table figure for a format and quantization, or None when unknown."""
    if fmt == VariantFormat.GGUF:
        return GGUF_BPW.get(quantization.upper())
    if fmt == VariantFormat.ONNX:
        return ONNX_BPW.get(quantization.lower())
    return SAFETENSORS_BPW.get(quantization.upper())


def actual_bpw(weights_bytes: int, parameters: int | None) -> float | None:
    """Bits per weight measured on the files: size × 8 / parameter count."""
    if not parameters or weights_bytes <= 0:
        return None
    return round(weights_bytes * 8 / parameters, 2)


def is_weights_file(path: str) -> bool:
    lower = path.lower()
    return lower.endswith(WEIGHT_SUFFIXES) or bool(_ONNX_DATA.search(lower))


def weights_bytes(files: Iterable[Any]) -> int:
    """Bytes of the weight files among ``files`` (objects with ``path`` and ``size``)."""
    return sum(f.size for f in files if is_weights_file(f.path))


@dataclass
class VariantSpec:
    name: str
    format: str
    quantization: str
    paths: list[str]
    size: int
    weights_bytes: int
    bits_per_weight: float | None
    produced_by: dict[str, Any] = field(default_factory=lambda: {"source": "upstream"})


@dataclass(frozen=True)
class Listed:
    path: str
    size: int


def _spec(
    name: str, fmt: str, quant: str, files: Sequence[Listed], parameters: int | None
) -> VariantSpec:
    weights = weights_bytes(files)
    bpw = actual_bpw(weights, parameters) or nominal_bpw(fmt, quant)
    return VariantSpec(
        name=name,
        format=fmt,
        quantization=quant,
        paths=sorted(f.path for f in files),
        size=sum(f.size for f in files),
        weights_bytes=weights,
        bits_per_weight=bpw,
    )


def _support_files(files: Sequence[Listed]) -> list[Listed]:
    """Config and tokenizer files at the repository root."""
    return [
        f
        for f in files
        if "/" not in f.path and (f.path in CONFIG_FILES or TOKENIZER_FILES.match(f.path))
    ]


def safetensors_dtype(config: dict[str, Any], dtypes: dict[str, int] | None = None) -> str:
    """The dominant dtype of the original weights: safetensors metadata, else config."""
    if dtypes:
        return max(dtypes.items(), key=lambda item: item[1])[0].upper()
    torch_dtype = str(config.get("torch_dtype") or config.get("dtype") or "")
    return TORCH_DTYPES.get(torch_dtype, "")


def _gguf_specs(files: Sequence[Listed], parameters: int | None) -> list[VariantSpec]:
    groups: dict[str, list[Listed]] = {}
    for f in files:
        if not f.path.lower().endswith(".gguf"):
            continue
        stem = re.sub(r"\.gguf$", "", f.path, flags=re.IGNORECASE)
        groups.setdefault(_SHARD.sub("", stem), []).append(f)
    specs = []
    for stem, members in sorted(groups.items()):
        quant = parse_gguf_quant(members[0].path)
        specs.append(_spec(stem, VariantFormat.GGUF, quant, members, parameters))
    return specs


def _is_data_of(path: str, model_path: str) -> bool:
    """``model.onnx_data`` / ``model.onnx.data`` hold the external tensors of ``model.onnx``."""
    data, model = path.lower(), model_path.lower()
    return data != model and (data.startswith(model + "_data") or data.startswith(model + ".data"))


def _onnx_specs(
    files: Sequence[Listed], support: list[Listed], parameters: int | None
) -> list[VariantSpec]:
    folders: dict[str, list[Listed]] = {}
    for f in files:
        folders.setdefault(posixpath.dirname(f.path), []).append(f)
    specs = []
    for folder, members in sorted(folders.items()):
        models = [f for f in members if f.path.lower().endswith(".onnx")]
        if not models:
            continue
        label = folder or "onnx-root"
        if not folder:  # at the root only the ONNX files themselves belong to the variant
            members = [f for f in members if _ONNX_DATA.search(f.path.lower())]
        by_quant: dict[str, list[Listed]] = {}
        for model in models:
            by_quant.setdefault(parse_onnx_quant(posixpath.basename(model.path)), []).append(model)
        shared = [
            f
            for f in members
            if not f.path.lower().endswith(".onnx") and not _ONNX_DATA.search(f.path.lower())
        ]
        if len(by_quant) == 1:
            quant = next(iter(by_quant)) or parse_onnx_quant(folder)
            specs.append(_spec(label, VariantFormat.ONNX, quant, [*members, *support], parameters))
            continue
        for quant, group in sorted(by_quant.items()):
            data = [f for f in members for model in group if _is_data_of(f.path, model.path)]
            name = f"{label}:{quant or 'fp32'}"
            selected = [*group, *data, *shared, *support]
            specs.append(_spec(name, VariantFormat.ONNX, quant or "fp32", selected, parameters))
    return specs


def detect_variants(
    files: Iterable[Any],
    *,
    parameters: int | None = None,
    config: dict[str, Any] | None = None,
    dtypes: dict[str, int] | None = None,
) -> list[VariantSpec]:
    """Variants found in a file listing (objects with ``path`` and ``size``)."""
    listed = [Listed(f.path, int(f.size or 0)) for f in files]
    support = _support_files(listed)
    specs: list[VariantSpec] = []
    weights = [f for f in listed if f.path.lower().endswith(".safetensors")]
    if weights:
        index = [f for f in listed if f.path.endswith(".safetensors.index.json")]
        quant = safetensors_dtype(config or {}, dtypes)
        specs.append(
            _spec(
                "original",
                VariantFormat.SAFETENSORS,
                quant,
                [*weights, *index, *support],
                parameters,
            )
        )
    specs.extend(_gguf_specs(listed, parameters))
    specs.extend(_onnx_specs(listed, support, parameters))
    return specs
