"""What the Hub derives from a repository's files: card data, config, parameter counts."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import yaml


def front_matter(readme: Path) -> dict[str, Any]:
    """The YAML block between the leading ``---`` lines of a model card (``cardData``)."""
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    block = text[3:].split("\n---", 1)[0]
    data = yaml.safe_load(block)
    return data if isinstance(data, dict) else {}


def config(path: Path) -> dict[str, Any] | None:
    """The part of config.json the Hub returns in model info."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return {key: data[key] for key in ("architectures", "model_type") if key in data}


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: 8-byte little-endian length, then the JSON."""
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100 * 1024 * 1024:
            raise ValueError(f"{path.name}: safetensors header of {length} bytes")
        header = json.loads(handle.read(length))
    return header if isinstance(header, dict) else {}


def safetensors_parameters(paths: list[Path]) -> dict[str, Any] | None:
    """``{"parameters": {dtype: count}, "total": count}`` over every tensor of the files."""
    if not paths:
        return None
    counts: dict[str, int] = {}
    for path in paths:
        for name, tensor in safetensors_header(path).items():
            if name == "__metadata__":
                continue
            dtype = tensor["dtype"]
            counts[dtype] = counts.get(dtype, 0) + math.prod(tensor["shape"])
    return {"parameters": counts, "total": sum(counts.values())}


def gguf_summary(path: Path) -> dict[str, Any]:
    """``{"total", "architecture", "context_length"}`` from a GGUF file's header."""
    from gguf import GGUFReader  # numpy-heavy; only for repositories holding GGUF files

    reader = GGUFReader(path)
    summary: dict[str, Any] = {"total": int(sum(int(t.n_elements) for t in reader.tensors))}
    field = reader.get_field("general.architecture")
    if field is not None:
        architecture = str(field.contents())
        summary["architecture"] = architecture
        context = reader.get_field(f"{architecture}.context_length")
        if context is not None:
            summary["context_length"] = int(context.contents())
    return summary
