"""ONNX Runtime outputs: export once (fp32), then int8 (dynamic) and int4 (MatMul n-bits).

The steps run in :mod:`fleet.agent.quantize.onnx_tool` child processes (cancellable, limited);
this module drives them and reads their ``progress:`` and ``result:`` lines.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet.agent.quantize.spec import QuantizeError
from fleet.agent.quantize.tools import ToolFailed, ToolRunner, python

ONNX_LEVELS = ("int8", "int4")
NEEDED_MODULES = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript")


def check_available() -> None:
    missing = [name for name in NEEDED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise QuantizeError(
            f"This node's agent lacks the Python packages {', '.join(missing)} that ONNX "
            "quantization needs. Install them into the agent's environment (see "
            "docs/quantization.md) and retry the job.",
            retryable=False,
            code="no_tools",
        )


def _run(
    runner: ToolRunner, args: list[str], label: str, advance: Callable[[float], None], what: str
) -> dict[str, Any]:
    result: dict[str, Any] = {}

    def on_line(line: str) -> None:
        if line.startswith("progress: "):
            with contextlib.suppress(ValueError):
                advance(float(line.split(" ", 1)[1]))
        elif line.startswith("result: "):
            result.update(json.loads(line.split(" ", 1)[1]))

    def echo(line: str) -> bool:
        return not line.startswith(("progress: ", "result: ")) and "%|" not in line

    argv = [python(), "-m", "fleet.agent.quantize.onnx_tool", *args]
    try:
        runner.run(argv, label=label, on_line=on_line, echo=echo)
    except ToolFailed as failed:
        said = next(
            (
                line
                for line in reversed(failed.tail)
                if "Error" in line or line.startswith("error:")
            ),
            failed.tail[-1] if failed.tail else "no output",
        )
        raise QuantizeError(
            f"{what} failed (exit status {failed.returncode}): {said}. Nothing was registered; "
            "the job's log holds the tool's output.",
            retryable=False,
            code="onnx_failed",
        ) from None
    if not result:
        raise QuantizeError(f"{what} reported no result.", retryable=False, code="onnx_failed")
    return result


def export(
    runner: ToolRunner, model_dir: Path, target: Path, advance: Callable[[float], None]
) -> dict[str, Any]:
    """transformers folder → ``target/model.onnx`` (fp32), written under a temporary name."""
    partial = target.with_name(target.name + ".partial")
    _remove(partial)
    result = _run(
        runner,
        ["export", str(model_dir), str(partial)],
        "onnx export",
        advance,
        "The ONNX export (torch.onnx.export, dynamo)",
    )
    partial.replace(target)
    return result


def quantize(
    runner: ToolRunner,
    level: str,
    source: Path,
    target: Path,
    advance: Callable[[float], None],
    block_size: int = 32,
) -> dict[str, Any]:
    partial = target.with_name(target.name + ".partial")
    _remove(partial)
    args = [level, str(source), str(partial)]
    if level == "int4":
        args += ["--block-size", str(block_size)]
    what = "ONNX Runtime int8 dynamic quantization" if level == "int8" else "ONNX Runtime int4"
    result = _run(runner, args, f"quantize {level}", advance, what)
    partial.replace(target)
    return result


def smoke(
    runner: ToolRunner,
    folder: Path,
    prompt: str,
    tokens: int,
    advance: Callable[[float], None],
) -> dict[str, Any]:
    args = ["smoke", str(folder), "--prompt", prompt, "--tokens", str(tokens)]
    if runner.limits.threads:
        args += ["--threads", str(runner.limits.threads)]
    return _run(
        runner, args, f"smoke {folder.name}", advance, "Loading and generating in ONNX Runtime"
    )


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
