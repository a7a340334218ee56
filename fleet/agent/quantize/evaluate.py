"""Evaluating a GGUF output on the node: perplexity on the shipped text, tokens/s.

- perplexity: ``llama-perplexity -f <text> -c <context>`` (its ``Final estimate: PPL = x +/- e``);
- tokens/s: a short greedy generation through ``llama-server`` on a free local port
  (``/completion`` answers its own ``timings.predicted_per_second``).
"""

from __future__ import annotations

import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from fleet.agent.quantize.gguf import _threads, _tool_error, chunk_parser
from fleet.agent.quantize.spec import QuantizeError
from fleet.agent.quantize.tools import LlamaTools, ToolFailed, ToolRunner, _limit, stop, tool_env

_PPL = re.compile(r"Final estimate: PPL = ([0-9.]+|nan|inf) \+/- ([0-9.]+|nan|inf)")
_OVER = re.compile(r"perplexity over (\d+) chunks")
_RUNNING = re.compile(r"\[(\d+)\]([0-9.]+)")
SERVER_READY_S = 120.0
PPL_ATTEMPTS = 5


def perplexity(
    runner: ToolRunner,
    tools: LlamaTools,
    model: Path,
    text_file: Path,
    context: int,
    advance: Any,
) -> dict[str, Any]:
    argv = [tools.binary("llama-perplexity"), "-m", model, "-f", text_file, "-c", str(context)]
    # One sequence per pass: the running estimate is printed after every chunk, which
    # :func:`_estimate` falls back on when the final line is lost.
    argv += ["-b", str(context), *_threads(runner)]
    started = time.monotonic()
    best: tuple[int, int, float, float | None] | None = None  # chunks, total, ppl, stderr
    for attempt in range(1, PPL_ATTEMPTS + 1):
        try:
            tail = runner.run(
                argv,
                label=f"perplexity {model.name}",
                on_line=chunk_parser(advance),
                echo=lambda line: "Final estimate" in line or "error" in line.lower(),
            )
        except ToolFailed as failed:
            raise _tool_error("llama-perplexity", failed, f"evaluating {model.name}") from None
        found = _estimate(tail)
        if found is not None and (best is None or found[0] > best[0]):
            best = found
        if best is not None and best[0] == best[1]:
            break
        runner.note(
            f"llama-perplexity's last lines were lost (attempt {attempt} of {PPL_ATTEMPTS}); "
            "running it again"
        )
    if best is None:
        raise QuantizeError(
            f"llama-perplexity gave no estimate for {model.name} (is the evaluation text long "
            f"enough for a context of {context} tokens? It needs at least twice as many).",
            retryable=False,
            code="evaluation_failed",
        )
    chunks, total, value, stderr = best
    if chunks < total:
        runner.note(f"perplexity of {model.name} over {chunks} of {total} chunks")
    return {
        "perplexity": value,
        "perplexity_stderr": stderr,
        "context": context,
        "chunks": chunks,
        "chunks_total": total,
        "seconds": round(time.monotonic() - started, 3),
    }


def _estimate(tail: list[str]) -> tuple[int, int, float, float | None] | None:
    """(chunks, total chunks, perplexity, its error) from the tool's output, or None.

    The final estimate when printed; else the running value after the last chunk printed
    (the perplexity over the chunks so far). llama.cpp logs from a background thread and, at
    exit, sometimes drops its last lines, the final estimate among them.
    """
    total = 0
    last: dict[int, float] = {}
    for line in tail:
        over = _OVER.search(line)
        if over:
            total = int(over[1])
        for index, value in _RUNNING.findall(line):
            last[int(index)] = float(value)
        match = _PPL.search(line)
        if match:
            return total, total, float(match[1]), float(match[2])
    if total and last:
        chunks = max(last)
        return chunks, total, last[chunks], None
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tokens_per_second(
    runner: ToolRunner, tools: LlamaTools, model: Path, prompt: str, tokens: int
) -> dict[str, Any]:
    """Start llama-server on the model, generate ``tokens`` greedily, read its timings."""
    port = _free_port()
    argv = [str(tools.binary("llama-server")), "-m", str(model), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "-c", "512", "-np", "1", *_threads(runner)]
    runner.note(f"$ {' '.join(argv)}")
    server_log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(  # noqa: S603 - configured tool, no shell
        argv,
        stdout=subprocess.DEVNULL,
        stderr=server_log,
        stdin=subprocess.DEVNULL,
        env=tool_env(runner.limits),
        start_new_session=True,
        preexec_fn=_limit(runner.limits),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_READY_S
        while True:
            runner.check()
            if proc.poll() is not None:
                server_log.seek(0)
                err = server_log.read()[-4000:].decode(errors="replace")
                raise QuantizeError(
                    f"llama-server could not load {model.name} (exit status {proc.returncode}): "
                    f"{err.strip().splitlines()[-1] if err.strip() else 'no output'}",
                    retryable=False,
                    code="evaluation_failed",
                )
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise QuantizeError(
                    f"llama-server did not get ready on {model.name} in {SERVER_READY_S:.0f} s.",
                    retryable=True,
                    code="evaluation_failed",
                )
            time.sleep(0.1)
        body = {
            "prompt": prompt,
            "n_predict": tokens,
            "temperature": 0,
            "ignore_eos": True,
            "cache_prompt": False,
        }
        answer = requests.post(f"{base}/completion", json=body, timeout=300)
        answer.raise_for_status()
        data = answer.json()
    except requests.RequestException as exc:
        raise QuantizeError(
            f"The short generation on {model.name} failed: {exc}",
            retryable=True,
            code="evaluation_failed",
        ) from None
    finally:
        stop(proc)
        server_log.close()
    timings = data.get("timings") or {}
    predicted = int(data.get("tokens_predicted") or timings.get("predicted_n") or 0)
    rate = timings.get("predicted_per_second")
    if not predicted or not rate:
        raise QuantizeError(
            f"llama-server generated no tokens with {model.name}; the model may be broken.",
            retryable=False,
            code="evaluation_failed",
        )
    return {
        "tokens_per_s": round(float(rate), 2),
        "tokens": predicted,
        "prompt_tokens_per_s": round(float(timings.get("prompt_per_second") or 0), 2) or None,
        "text": str(data.get("content") or "")[:200],
    }
