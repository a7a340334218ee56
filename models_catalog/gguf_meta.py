"""Read a GGUF header (metadata and tensor infos) from a stream, without the tensor data.

The importer reads it over HTTP range requests (``hub.RangeReader``), so the parameter
count of a multi-gigabyte GGUF file costs only its header (a few MB: the tokenizer
vocabulary lives there). Arrays longer than ``MAX_KEPT_ITEMS`` keep only their length.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gguf

MAX_KEPT_ITEMS = 64
MAX_STRING = 1 << 24
MAX_COUNT = 1 << 32

_SCALARS: dict[int, str] = {
    gguf.GGUFValueType.UINT8: "<B",
    gguf.GGUFValueType.INT8: "<b",
    gguf.GGUFValueType.UINT16: "<H",
    gguf.GGUFValueType.INT16: "<h",
    gguf.GGUFValueType.UINT32: "<I",
    gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f",
    gguf.GGUFValueType.BOOL: "<?",
    gguf.GGUFValueType.UINT64: "<Q",
    gguf.GGUFValueType.INT64: "<q",
    gguf.GGUFValueType.FLOAT64: "<d",
}


class GGUFHeaderError(ValueError):
    """The bytes are not a GGUF header this parser understands."""


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    array_lengths: dict[str, int] = field(default_factory=dict)
    tensor_count: int = 0
    parameter_count: int = 0

    @property
    def file_type(self) -> str:
        """llama.cpp's file type (``Q4_K_M``, ``F16``, …) from general.file_type, or ''."""
        value = self.metadata.get("general.file_type")
        if not isinstance(value, int):
            return ""
        try:
            name = gguf.LlamaFileType(value).name
        except ValueError:
            return ""
        return name.removeprefix("MOSTLY_").removeprefix("ALL_").replace("_MOE", "")


class _Stream:
    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read

    def exact(self, size: int) -> bytes:
        data = self._read(size)
        if len(data) != size:
            raise GGUFHeaderError("the GGUF header ends early")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.exact(struct.calcsize(fmt)))[0]

    def count(self) -> int:
        value = int(self.unpack("<Q"))
        if value > MAX_COUNT:
            raise GGUFHeaderError(f"implausible count {value} in the GGUF header")
        return value

    def string(self) -> str:
        size = self.count()
        if size > MAX_STRING:
            raise GGUFHeaderError(f"implausible string length {size} in the GGUF header")
        return self.exact(size).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind == gguf.GGUFValueType.STRING:
            return self.string()
        fmt = _SCALARS.get(kind)
        if fmt is None:
            raise GGUFHeaderError(f"unknown GGUF value type {kind}")
        return self.unpack(fmt)


def read_header(read: Callable[[int], bytes]) -> GGUFHeader:
    """Parse magic, version, metadata and tensor infos; sum the tensors' element counts."""
    stream = _Stream(read)
    magic = stream.unpack("<I")
    if magic != gguf.GGUF_MAGIC:
        raise GGUFHeaderError("not a GGUF file (bad magic)")
    version = int(stream.unpack("<I"))
    if version < 2:
        raise GGUFHeaderError(f"GGUF version {version} is too old")
    tensor_count = stream.count()
    kv_count = stream.count()
    header = GGUFHeader(version=version, tensor_count=tensor_count)
    for _ in range(kv_count):
        key = stream.string()
        kind = int(stream.unpack("<I"))
        if kind != gguf.GGUFValueType.ARRAY:
            header.metadata[key] = stream.value(kind)
            continue
        item_kind = int(stream.unpack("<I"))
        length = stream.count()
        items = [stream.value(item_kind) for _ in range(length)]
        header.array_lengths[key] = length
        if length <= MAX_KEPT_ITEMS:
            header.metadata[key] = items
    for _ in range(tensor_count):
        stream.string()  # name
        n_dims = int(stream.unpack("<I"))
        dims = [int(stream.unpack("<Q")) for _ in range(n_dims)]
        stream.unpack("<I")  # ggml type
        stream.unpack("<Q")  # offset
        header.parameter_count += math.prod(dims)
    return header
