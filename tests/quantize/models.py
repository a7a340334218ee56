"""Real tiny source models for the quantize tests, built with transformers and cached.

- :func:`tiny_llama_256`: the hub fixtures' tiny Llama recipe (SentencePiece tokenizer) with
  hidden size 256, the smallest that K-quants (Q4_K_M, 256-wide blocks) quantize as asked;
- :func:`bench_llama`: the same recipe at ~100 MB (float32 safetensors) for bench/quantize.py;
- :func:`byte_level_bpe_model`: a copy of a model whose tokenizer is a freshly trained
  byte-level BPE (``tokenizer.json`` only), which llama.cpp's converter rejects by hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from tests.hubserver import tinymodel

QUANTIZE_PARAMS = {"hidden_size": 256, "intermediate_size": 512, "builder_q": 1}
BENCH_PARAMS = {
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "builder_q": 1,
}
_lock = threading.Lock()


def _build_with(params: dict[str, Any], prefix: str) -> Path:
    merged = {**tinymodel.PARAMS, **params}
    blob = json.dumps({"params": merged, "base": tinymodel._key()}, sort_keys=True)
    target = tinymodel.cache_root() / f"{prefix}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"
    if (target / "model.safetensors").is_file():
        return target
    with _lock:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=target.parent))
        saved = dict(tinymodel.PARAMS)
        tinymodel.PARAMS.update({k: v for k, v in params.items() if k in tinymodel.PARAMS})
        try:
            tinymodel._build(work)
            try:
                os.replace(work, target)
            except OSError:
                if not (target / "model.safetensors").is_file():
                    raise
        finally:
            tinymodel.PARAMS.clear()
            tinymodel.PARAMS.update(saved)
            shutil.rmtree(work, ignore_errors=True)
    return target


def tiny_llama_256() -> Path:
    return _build_with(QUANTIZE_PARAMS, "tiny-llama-q256")


def bench_llama() -> Path:
    return _build_with(BENCH_PARAMS, "bench-llama-100m")


def byte_level_bpe_model(source: Path, out: Path) -> Path:
    """``source``'s weights with a newly trained byte-level BPE tokenizer (tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    config = json.loads((out / "config.json").read_text())
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(config["vocab_size"]),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<unk>", "<s>", "</s>"],
    )
    words = " ".join(tinymodel.WORDS)
    tokenizer.train_from_iterator([words] * 200, trainer=trainer)
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
            }
        )
    )
    return out
