"""GGUF with llama.cpp: convert (``convert_hf_to_gguf.py``), ``llama-imatrix``, ``llama-quantize``.

Each step writes to a temporary name next to its target and renames it only after the tool
exited cleanly, so a file under its final name is always complete (what a resumed job trusts).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from fleet.agent.quantize.spec import QuantizeError
from fleet.agent.quantize.tools import LlamaTools, ToolFailed, ToolRunner, python

_PERCENT = re.compile(r"(\d{1,3})%\|")
_TENSOR = re.compile(r"^\[\s*(\d+)\s*/\s*(\d+)\s*\]")
_CHUNKS = re.compile(r"computing over (\d+) chunks|calculating perplexity over (\d+) chunks")
_CHUNK_DONE = re.compile(r"\[(\d+)\]")
# What the converter says when it gives up, and what the job's error should say.
_CONVERTER_ERRORS = (
    (
        re.compile(r"Model (\S+) is not supported|Architecture '?([^'!]+)'? not supported"),
        "unsupported_architecture",
        "llama.cpp's converter does not support this model's architecture ({detail}). Pick a "
        "model whose architecture llama.cpp supports, or a source that is already GGUF.",
    ),
    (
        re.compile(r"BPE pre-tokenizer was not recognized"),
        "tokenizer_rejected",
        "llama.cpp's converter rejected the model's tokenizer (a byte-level BPE vocabulary it "
        "does not recognise by hash). Nothing was registered. A newer llama.cpp may know it; "
        "otherwise use a GGUF published for this model.",
    ),
)
# What of a tool's output goes to the job's log (all of it stays in the tool's tail for errors).
_QUANTIZE_ECHO = re.compile(
    r"quantize_impl: (model|quant) size|quantize time|total time|error|warn", re.I
)
_CONVERT_QUIET = re.compile(r"-->|%\||^INFO:hf-to-gguf:gguf: |^INFO:gguf\.vocab:")
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_.]*(?:Error|Exception)\b.*|ERROR:.*|error:.*)")


def percent_parser(advance: Callable[[float], None]) -> Callable[[str], None]:
    """tqdm bars (``Writing: 45%|``) as a fraction."""

    def on_line(line: str) -> None:
        found = _PERCENT.findall(line)
        if found:
            advance(int(found[-1]) / 100.0)

    return on_line


def tensor_parser(advance: Callable[[float], None]) -> Callable[[str], None]:
    """llama-quantize's ``[ 12/ 201] blk.0.attn_k.weight …`` lines as a fraction."""

    def on_line(line: str) -> None:
        match = _TENSOR.match(line)
        if match and int(match[2]):
            advance(int(match[1]) / int(match[2]))

    return on_line


def chunk_parser(advance: Callable[[float], None]) -> Callable[[str], None]:
    """llama-perplexity / llama-imatrix: ``over N chunks``, then ``[k]…`` per chunk."""
    total = [0]

    def on_line(line: str) -> None:
        match = _CHUNKS.search(line)
        if match:
            total[0] = int(match[1] or match[2])
            return
        if total[0]:
            done = [int(x) for x in _CHUNK_DONE.findall(line)]
            if done:
                advance(max(done) / total[0])

    return on_line


def converter_error(failed: ToolFailed) -> QuantizeError:
    """The converter's own message as the job's error (no stack trace)."""
    text = "\n".join(failed.tail)
    for pattern, code, message in _CONVERTER_ERRORS:
        match = pattern.search(text)
        if match:
            detail = next((g for g in match.groups() if g), match[0])
            return QuantizeError(message.format(detail=detail), retryable=False, code=code)
    lines = [line for line in failed.tail if _ERROR_LINE.match(line)]
    said = lines[-1] if lines else (failed.tail[-1] if failed.tail else "no output")
    return QuantizeError(
        f"llama.cpp's converter failed (exit status {failed.returncode}): {said}. Nothing was "
        "registered; the job's log holds the converter's output.",
        retryable=False,
        code="conversion_failed",
    )


def convert(
    runner: ToolRunner,
    tools: LlamaTools,
    model_dir: Path,
    target: Path,
    advance: Callable[[float], None],
) -> None:
    """safetensors folder → GGUF F16 at ``target``."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    argv = [python(), tools.converter, model_dir, "--outtype", "f16", "--outfile", partial]
    try:
        runner.run(
            argv,
            label="convert",
            on_line=percent_parser(advance),
            env=tools.converter_env(),
            echo=lambda line: not _CONVERT_QUIET.search(line),
        )
    except ToolFailed as failed:
        partial.unlink(missing_ok=True)
        raise converter_error(failed) from None
    partial.replace(target)


def imatrix(
    runner: ToolRunner,
    tools: LlamaTools,
    model: Path,
    text_file: Path,
    target: Path,
    context: int,
    advance: Callable[[float], None],
) -> None:
    """An importance matrix of ``model`` over the evaluation text (for low-bit types)."""
    partial = target.with_name(target.name + ".partial" + target.suffix)
    partial.unlink(missing_ok=True)
    argv = [tools.binary("llama-imatrix"), "-m", model, "-f", text_file, "-o", partial]
    argv += ["-c", str(context), "-b", str(context), "--no-ppl", *_threads(runner)]
    try:
        runner.run(
            argv,
            label="imatrix",
            on_line=chunk_parser(advance),
            echo=lambda line: "error" in line.lower() or "saving" in line.lower(),
        )
    except ToolFailed as failed:
        partial.unlink(missing_ok=True)
        raise _tool_error("llama-imatrix", failed, "importance matrix") from None
    if not partial.is_file():
        raise QuantizeError(
            f"llama-imatrix exited cleanly but wrote no {partial.name}; see the job's log.",
            retryable=False,
            code="imatrix_failed",
        )
    partial.replace(target)


def quantize(
    runner: ToolRunner,
    tools: LlamaTools,
    source: Path,
    target: Path,
    level: str,
    advance: Callable[[float], None],
    *,
    imatrix_file: Path | None = None,
    requantize: bool = False,
) -> list[str]:
    """``llama-quantize`` ``source`` → ``target`` at ``level``; the exact arguments used."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    options: list[str] = []
    if requantize:
        options.append("--allow-requantize")
    if imatrix_file is not None:
        options += ["--imatrix", str(imatrix_file)]
    threads = [str(runner.limits.threads)] if runner.limits.threads else []
    argv = [tools.binary("llama-quantize"), *options, source, partial, level, *threads]
    try:
        runner.run(
            argv,
            label=f"quantize {level}",
            on_line=tensor_parser(advance),
            echo=lambda line: bool(_QUANTIZE_ECHO.search(line)) and "general.size" not in line,
        )
    except ToolFailed as failed:
        partial.unlink(missing_ok=True)
        raise _tool_error("llama-quantize", failed, f"quantizing to {level}") from None
    partial.replace(target)
    return [*options, level, *threads]


def _threads(runner: ToolRunner) -> list[str]:
    return ["-t", str(runner.limits.threads)] if runner.limits.threads else []


def _tool_error(tool: str, failed: ToolFailed, what: str) -> QuantizeError:
    said = next(
        (line for line in reversed(failed.tail) if "error" in line.lower() or "fail" in line),
        failed.tail[-1] if failed.tail else "no output",
    )
    killed = failed.returncode < 0 or failed.returncode == 137
    hint = (
        " It was killed (a memory limit or the system's out-of-memory killer?): raise the "
        "job's memory limit or pick a node with more RAM."
        if killed
        else ""
    )
    return QuantizeError(
        f"{tool} failed while {what} (exit status {failed.returncode}): {said}.{hint} "
        "Nothing was registered; the job's log holds the tool's output.",
        retryable=False,
        code="tool_failed",
    )
