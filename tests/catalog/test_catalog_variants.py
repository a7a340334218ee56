"""Variant detection, quantization names, bits per weight, size tiers, GGUF headers."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest

from models_catalog.filtersets import TIER_BOUNDS
from models_catalog.gguf_meta import GGUFHeaderError, read_header
from models_catalog.models import size_tier
from models_catalog.variants import (
    GGUF_BPW,
    actual_bpw,
    detect_variants,
    nominal_bpw,
    parse_gguf_quant,
    parse_onnx_quant,
)


@dataclass
class F:
    path: str
    size: int


@pytest.mark.parametrize(
    ("filename", "quant"),
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-0.5b-instruct-q5_k_m.gguf", "Q5_K_M"),
        ("model.Q8_0.gguf", "Q8_0"),
        ("model-q4-k-s.gguf", "Q4_K_S"),
        ("phi-4-mini.IQ2_XXS.gguf", "IQ2_XXS"),
        ("Phi-4-mini-instruct-IQ4_XS.gguf", "IQ4_XS"),
        ("gemma-IQ3_M.gguf", "IQ3_M"),
        ("ggml-model-f16.gguf", "F16"),
        ("ggml-model-fp16.gguf", "F16"),
        ("model-BF16.gguf", "BF16"),
        ("model_f32.gguf", "F32"),
        ("Q6_K/model-Q6_K-00001-of-00002.gguf", "Q6_K"),
        ("tiny-Q2_K.gguf", "Q2_K"),
        ("tiny-Q3_K_M.gguf", "Q3_K_M"),
        ("tiny-q5_0.gguf", "Q5_0"),
        ("tiny-Q4_0.gguf", "Q4_0"),
        ("tiny-Q4_0_4_4.gguf", "Q4_0_4_4"),
        ("mmproj-model.gguf", ""),
        ("model.gguf", ""),
        ("IQ4Model.gguf", ""),  # not separated: not a quantization name
    ],
)
def test_gguf_quantization_from_file_names(filename, quant):
    assert parse_gguf_quant(filename) == quant


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("onnx-int8", "int8"),
        ("cpu-int4-rtn-block-32", "int4"),
        ("model_fp16.onnx", "fp16"),
        ("model_quantized.onnx", "int8"),
        ("model_q4f16.onnx", "q4f16"),
        ("model_q4.onnx", "int4"),
        ("model_uint8.onnx", "uint8"),
        ("model.onnx", ""),
        ("onnx", ""),
    ],
)
def test_onnx_quantization_from_names(name, quant):
    assert parse_onnx_quant(name) == quant


def test_bits_per_weight_table_and_actual_figure():
    assert GGUF_BPW["Q4_K_M"] == pytest.approx(4.85)
    assert nominal_bpw("gguf", "Q8_0") == 8.5 == 34 * 8 / 32
    assert nominal_bpw("gguf", "F16") == 16
    assert nominal_bpw("gguf", "q4_k_m") == pytest.approx(4.85)
    assert nominal_bpw("onnx", "int8") == 8
    assert nominal_bpw("safetensors", "BF16") == 16
    assert nominal_bpw("gguf", "") is None
    # actual: file size × 8 / parameters
    assert actual_bpw(807_694_464, 1_235_814_400) == pytest.approx(5.23, abs=0.01)
    assert actual_bpw(100, None) is None


def test_detect_variants_in_a_mixed_repository():
    files = [
        F(".gitattributes", 100),
        F("README.md", 2000),
        F("config.json", 800),
        F("generation_config.json", 200),
        F("tokenizer.json", 9_000_000),
        F("tokenizer_config.json", 50_000),
        F("special_tokens_map.json", 300),
        F("model-00001-of-00002.safetensors", 4_000_000_000),
        F("model-00002-of-00002.safetensors", 1_000_000_000),
        F("model.safetensors.index.json", 20_000),
        F("model-Q4_K_M.gguf", 800_000_000),
        F("Q8_0/model-Q8_0-00001-of-00002.gguf", 700_000_000),
        F("Q8_0/model-Q8_0-00002-of-00002.gguf", 600_000_000),
        F("onnx/model.onnx", 1_000),
        F("onnx/model.onnx_data", 5_000_000_000),
        F("onnx/model_int8.onnx", 1_300_000_000),
        F("onnx/model_fp16.onnx", 2_500_000_000),
        F("cpu-int4-rtn-block-32/model.onnx", 900_000_000),
        F("cpu-int4-rtn-block-32/genai_config.json", 1_500),
    ]
    specs = {
        s.name: s for s in detect_variants(files, parameters=2_500_000_000, dtypes={"BF16": 1})
    }
    assert sorted(specs) == [
        "Q8_0/model-Q8_0",
        "cpu-int4-rtn-block-32",
        "model-Q4_K_M",
        "onnx:fp16",
        "onnx:fp32",
        "onnx:int8",
        "original",
    ]
    original = specs["original"]
    assert original.format == "safetensors" and original.quantization == "BF16"
    assert "config.json" in original.paths and "tokenizer.json" in original.paths
    assert "README.md" not in original.paths and "model-Q4_K_M.gguf" not in original.paths
    assert original.weights_bytes == 5_000_000_000
    assert original.bits_per_weight == 16.0  # 5e9 bytes × 8 / 2.5e9 parameters
    q4 = specs["model-Q4_K_M"]
    assert (q4.format, q4.quantization, q4.paths) == ("gguf", "Q4_K_M", ["model-Q4_K_M.gguf"])
    assert q4.bits_per_weight == pytest.approx(2.56)  # measured, not the nominal 4.85
    shards = specs["Q8_0/model-Q8_0"]
    assert shards.quantization == "Q8_0" and len(shards.paths) == 2
    assert shards.size == 1_300_000_000
    fp32 = specs["onnx:fp32"]
    assert set(fp32.paths) >= {"onnx/model.onnx", "onnx/model.onnx_data", "config.json"}
    assert "onnx/model_int8.onnx" not in fp32.paths
    assert specs["onnx:int8"].paths.count("onnx/model.onnx_data") == 0
    folder = specs["cpu-int4-rtn-block-32"]
    assert folder.quantization == "int4"
    assert "cpu-int4-rtn-block-32/genai_config.json" in folder.paths
    assert all(s.produced_by == {"source": "upstream"} for s in specs.values())


def test_without_a_parameter_count_the_nominal_figure_is_used():
    (spec,) = detect_variants([F("x-Q4_K_M.gguf", 100)])
    assert spec.bits_per_weight == pytest.approx(4.85)


@pytest.mark.parametrize(
    ("parameters", "tier"),
    [
        (None, None),
        (50_000_000, "tiny"),
        (100_000_000, "micro"),
        (494_032_768, "micro"),
        (1_235_814_400, "micro"),
        (1_400_000_000, "micro"),
        (1_500_000_000, "small"),
        (3_836_021_760, "small"),
        (13_900_000_000, "small"),
        (14_000_000_000, "medium"),
        (30_000_000_000, "medium"),
        (32_000_000_000, "large"),
    ],
)
def test_size_tiers_and_the_filter_bounds_agree(parameters, tier):
    assert size_tier(parameters) == tier
    if parameters is not None:
        low, high = TIER_BOUNDS[tier]
        assert (low is None or parameters >= low) and (high is None or parameters < high)


def _write_gguf(path: Path) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_context_length(512)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_token_list([f"t{i}" for i in range(100)])
    writer.add_tensor("token_embd.weight", np.zeros((100, 64), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.zeros((64,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_header_parameter_count_and_facts(tmp_path):
    from models_catalog.footprint import architecture_from_gguf

    path = tmp_path / "m.gguf"
    _write_gguf(path)
    stream = io.BytesIO(path.read_bytes())
    header = read_header(stream.read)
    assert header.parameter_count == 100 * 64 + 64
    assert header.tensor_count == 2
    assert header.file_type == "Q8_0"
    assert header.array_lengths["tokenizer.ggml.tokens"] == 100
    assert "tokenizer.ggml.tokens" not in header.metadata  # long arrays keep their length only
    facts = architecture_from_gguf(header.metadata, header.array_lengths)
    assert (facts.num_layers, facts.hidden_size, facts.num_kv_heads, facts.head_dim) == (
        2,
        64,
        2,
        16,
    )
    assert facts.vocab_size == 100 and facts.max_context == 512
    with pytest.raises(GGUFHeaderError):
        read_header(io.BytesIO(b"not a gguf file at all").read)
    with pytest.raises(GGUFHeaderError):
        read_header(io.BytesIO(path.read_bytes()[:40]).read)
