"""The ONNX steps, run as the agent's child (``python -m fleet.agent.quantize.onnx_tool``).

A child process so that a cancel can stop it (its process group is killed) and so that the
job's memory and thread limits apply to it. Subcommands print ``progress: <0..1>`` lines and,
last, one ``result: {json}`` line.

- ``export MODEL_DIR OUT_DIR``: transformers → ONNX with ``torch.onnx.export(dynamo=True)``
  (inputs ``input_ids``, ``attention_mask``; output ``logits``; batch and sequence dynamic;
  no KV cache), the config and tokenizer files copied next to ``model.onnx``;
- ``int8 SRC_DIR OUT_DIR``: ONNX Runtime ``quantize_dynamic`` with QInt8 weights;
- ``int4 SRC_DIR OUT_DIR``: ONNX Runtime's MatMul n-bits (4-bit, weight-only, block-wise);
- ``smoke DIR``: load in ONNX Runtime, generate greedily, measure tokens/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

MODEL_FILE = "model.onnx"
SUPPORT_SUFFIXES = (".json", ".model", ".txt", ".jinja")
DEFAULT_OPSET = 18
EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf's 2 GB cap: bigger weights go to a data file


def _progress(fraction: float) -> None:
    print(f"progress: {fraction:.3f}", flush=True)


def _result(data: dict[str, Any]) -> None:
    print("result: " + json.dumps(data), flush=True)


def _copy_support(src: Path, out: Path) -> None:
    for path in sorted(src.iterdir()):
        if path.is_file() and path.suffix in SUPPORT_SUFFIXES and path.name != "onnx.json":
            shutil.copy2(path, out / path.name)


def export(model_dir: Path, out: Path, opset: int) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    # model_dir is a local directory (a variant's files), never a Hub id: nothing to pin
    config = AutoConfig.from_pretrained(model_dir)  # nosec B615
    config.use_cache = False
    model = AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=torch.float32)  # nosec B615
    model.eval()
    _progress(0.2)

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).logits

    ids = torch.ones((1, 8), dtype=torch.int64)
    mask = torch.ones((1, 8), dtype=torch.int64)
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=4096)
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        program = torch.onnx.export(
            Logits(model),
            (ids, mask),
            dynamo=True,
            opset_version=opset,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_shapes={
                "input_ids": {0: batch, 1: seq},
                "attention_mask": {0: batch, 1: seq},
            },
            optimize=True,
        )
    _progress(0.8)
    assert program is not None
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    program.save(str(out / MODEL_FILE), external_data=weights > EXTERNAL_DATA_BYTES)
    _copy_support(model_dir, out)
    return {"opset": opset, "torch": torch.__version__, "files": _files(out)}


def _files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def int8(src: Path, out: Path) -> dict[str, Any]:
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.mkdir(parents=True, exist_ok=True)
    _progress(0.1)
    external = any(p.name != MODEL_FILE and ".onnx" in p.name for p in src.iterdir())
    quantize_dynamic(
        str(src / MODEL_FILE),
        str(out / MODEL_FILE),
        weight_type=QuantType.QInt8,
        use_external_data_format=external,
    )
    _copy_support(src, out)
    return {
        "onnxruntime": onnxruntime.__version__,
        "method": "quantize_dynamic",
        "params": {"weight_type": "QInt8", "activations": "dynamic uint8"},
        "files": _files(out),
    }


def int4(src: Path, out: Path, block_size: int) -> dict[str, Any]:
    import onnx
    import onnxruntime

    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError:
        print(
            f"error: ONNX Runtime {onnxruntime.__version__} has no MatMul n-bits quantizer "
            "(int4 needs ONNX Runtime 1.17 or newer)",
            flush=True,
        )
        raise SystemExit(3) from None
    import logging

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    _progress(0.1)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(src / MODEL_FILE)), block_size=block_size, is_symmetric=True
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(out / MODEL_FILE), False)
    _copy_support(src, out)
    return {
        "onnxruntime": onnxruntime.__version__,
        "method": "MatMulNBitsQuantizer",
        "params": {"bits": 4, "block_size": block_size, "symmetric": True},
        "files": _files(out),
    }


def smoke(model_dir: Path, prompt: str, tokens: int, threads: int | None) -> dict[str, Any]:
    import numpy as np
    import onnx
    import onnxruntime
    from transformers import AutoTokenizer

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(
        str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
    )
    opset = max(
        (
            o.version
            for o in onnx.load(str(model_dir / MODEL_FILE), load_external_data=False).opset_import
            if o.domain in ("", "ai.onnx")
        ),
        default=0,
    )
    # a local directory, never a Hub id: nothing to pin
    tokenizer = AutoTokenizer.from_pretrained(model_dir)  # nosec B615
    ids = list(tokenizer(prompt)["input_ids"])
    prompt_len = len(ids)
    started = time.perf_counter()
    for step in range(tokens):
        batch = np.array([ids], dtype=np.int64)
        (logits,) = session.run(
            ["logits"], {"input_ids": batch, "attention_mask": np.ones_like(batch)}
        )
        ids.append(int(np.argmax(logits[0, -1])))
        _progress((step + 1) / tokens)
    elapsed = time.perf_counter() - started
    generated = ids[prompt_len:]
    return {
        "loads": True,
        "tokens": len(generated),
        "tokens_per_s": round(len(generated) / elapsed, 2) if elapsed > 0 else None,
        "text": tokenizer.decode(generated)[:200],
        "opset": opset,
        "onnxruntime": onnxruntime.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onnx_tool")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p = sub.add_parser("int8")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("int4")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--block-size", type=int, default=32)
    p = sub.add_parser("smoke")
    p.add_argument("src", type=Path)
    p.add_argument("--prompt", default="The fleet")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "export":
        result = export(args.src, args.out, args.opset)
    elif args.command == "int8":
        result = int8(args.src, args.out)
    elif args.command == "int4":
        result = int4(args.src, args.out, args.block_size)
    else:
        result = smoke(args.src, args.prompt, args.tokens, args.threads)
    _result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
