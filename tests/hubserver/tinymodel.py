"""A real tiny LlamaForCausalLM with a trained SentencePiece tokenizer, and a tiny GGUF file.

Built once and cached under ``~/.cache/slm-fleet/tiny-llama-<key>``, the key hashing the
library versions and the parameters, so later runs (and CI) reuse it. torch and transformers
are imported only while building.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

PARAMS = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "vocab_size": 1000,
    "seed": 0,
    "builder": 1,  # bump when the recipe below changes
}
WORDS = (  # noqa: SIM905 - a sentence reads better than a list literal
    "the a fleet model small language node store mirror cache token deploy quick brown fox "
    "jumps over lazy dog server client request answer bytes file hub commit branch layer head "
    "vector weight tensor train learn run fast slow green blue red yellow cat bird river "
    "mountain city road house tree stone light dark day night morning evening water fire wind"
).split()


def cache_root() -> Path:
    return Path(os.environ.get("SLM_FLEET_CACHE", Path.home() / ".cache" / "slm-fleet"))


def _key() -> str:
    libraries = ("torch", "transformers", "sentencepiece", "safetensors", "tokenizers")
    versions = {name: version(name) for name in libraries}
    blob = json.dumps({"params": PARAMS, "versions": versions}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tiny_llama() -> Path:
    """The cached model folder (config, safetensors weights, tokenizer files)."""
    target = cache_root() / f"tiny-llama-{_key()}"
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tiny-llama-", dir=target.parent))
    try:
        _build(work)
        try:
            os.replace(work, target)  # atomic: a concurrent build simply loses the race
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _corpus(path: Path) -> None:
    rng = random.Random(PARAMS["seed"])  # noqa: S311 - a reproducible corpus, not a secret
    lines = []
    for _ in range(3000):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15)))
        lines.append(f"{words.capitalize()}{rng.choice('.!?,')} {rng.randint(0, 999)}")
    path.write_text("\n".join(lines), encoding="utf-8")


def _build(out: Path) -> None:
    import sentencepiece as spm
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    scratch = out / "_scratch"
    scratch.mkdir()
    _corpus(scratch / "corpus.txt")
    spm.SentencePieceTrainer.train(
        input=str(scratch / "corpus.txt"),
        model_prefix=str(scratch / "tokenizer"),
        vocab_size=PARAMS["vocab_size"],
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    shutil.copyfile(scratch / "tokenizer.model", out / "tokenizer.model")
    # FACTS.md: LlamaTokenizer(vocab_file=...) is silently empty in transformers 5.
    tokenizer = LlamaTokenizer.from_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=PARAMS["hidden_size"],
        intermediate_size=PARAMS["intermediate_size"],
        num_hidden_layers=PARAMS["num_hidden_layers"],
        num_attention_heads=PARAMS["num_attention_heads"],
        num_key_value_heads=PARAMS["num_key_value_heads"],
        max_position_embeddings=PARAMS["max_position_embeddings"],
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(PARAMS["seed"])
    LlamaForCausalLM(config).save_pretrained(str(out), safe_serialization=True)
    shutil.rmtree(scratch)


def write_tiny_gguf(path: Path, *, context_length: int = 256) -> Path:
    """A small valid GGUF file: llama metadata, ``general.file_type`` Q8_0, two tensors."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType
    from gguf.quants import quantize

    rng = np.random.default_rng(0)
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_file_type(LlamaFileType.MOSTLY_Q8_0)
    writer.add_context_length(context_length)
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    embeddings = rng.standard_normal((128, 64), dtype=np.float32)
    writer.add_tensor(
        "token_embd.weight",
        quantize(embeddings, GGMLQuantizationType.Q8_0),
        raw_dtype=GGMLQuantizationType.Q8_0,
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
