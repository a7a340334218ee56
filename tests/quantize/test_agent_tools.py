"""The agent's side with the real llama.cpp tools and converter (no control plane needed):
the converter's own verdicts become clear job errors, tool output feeds progress, and a
missing tools path says how to configure one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fleet.agent.quantize import gguf
from fleet.agent.quantize.evaluate import _estimate
from fleet.agent.quantize.progress import LOG_LINES_PER_POST, StageProgress
from fleet.agent.quantize.spec import Limits, QuantizeError
from fleet.agent.quantize.tools import TOOLS_ENV, LlamaTools, ToolFailed, ToolRunner
from tests.quantize.models import byte_level_bpe_model

pytestmark = pytest.mark.timeout(600)


def runner(notes: list[str]) -> ToolRunner:
    return ToolRunner(Limits(threads=2), lambda: None, notes.append)


def test_converter_rejects_byte_level_bpe_with_a_clear_error(
    llama_cpp_tools: Path, quantize_model_dir: Path, tmp_path: Path
):
    model = byte_level_bpe_model(quantize_model_dir, tmp_path / "bpe")
    notes: list[str] = []
    target = tmp_path / "f16.gguf"
    with pytest.raises(QuantizeError) as caught:
        gguf.convert(runner(notes), LlamaTools(llama_cpp_tools), model, target, lambda f: None)
    error = caught.value
    assert error.code == "tokenizer_rejected" and not error.retryable
    assert "rejected the model's tokenizer" in error.message
    assert "Traceback" not in error.message
    assert not target.exists() and not list(tmp_path.glob("*.partial"))


def test_converter_refuses_an_unknown_architecture(
    llama_cpp_tools: Path, quantize_model_dir: Path, tmp_path: Path
):
    model = tmp_path / "odd"
    shutil.copytree(quantize_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["FancyNewForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(QuantizeError) as caught:
        gguf.convert(runner([]), LlamaTools(llama_cpp_tools), model, tmp_path / "x.gguf", print)
    assert caught.value.code == "unsupported_architecture"
    assert "FancyNewForCausalLM" in caught.value.message


def test_quantize_reports_progress_and_unknown_type_fails(
    llama_cpp_tools: Path, tiny_gguf: Path, tmp_path: Path
):
    progress = StageProgress(["quantize Q8_0"])
    progress.begin("quantize Q8_0", "quantizing to Q8_0", "q8.gguf")
    notes: list[str] = []
    tools = LlamaTools(llama_cpp_tools)
    arguments = gguf.quantize(
        runner(notes), tools, tiny_gguf, tmp_path / "q8.gguf", "Q8_0", progress.advance
    )
    assert arguments == ["Q8_0", "2"]
    assert progress.fraction == 1.0  # from llama-quantize's [k/n] tensor lines
    assert any("quant size" in line for line in notes)
    assert not any(line.startswith("[") for line in notes)  # tensor lines stay out of the log
    with pytest.raises(QuantizeError) as caught:
        gguf.quantize(runner([]), tools, tiny_gguf, tmp_path / "bad.gguf", "Q9_9", print)
    assert caught.value.code == "tool_failed" and "llama-quantize" in caught.value.message
    assert not (tmp_path / "bad.gguf").exists()


def test_no_tools_path_says_how_to_configure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv(TOOLS_ENV, raising=False)
    with pytest.raises(QuantizeError) as caught:
        LlamaTools.configured(None)
    assert "--llama-cpp-tools" in caught.value.message and caught.value.code == "no_tools"
    with pytest.raises(QuantizeError) as missing:
        LlamaTools(tmp_path).binary("llama-quantize")
    assert str(tmp_path) in missing.value.message


def test_failed_tool_keeps_its_output_tail(tmp_path: Path):
    with pytest.raises(ToolFailed) as caught:
        runner([]).run(["sh", "-c", "echo one; echo two >&2; exit 3"], label="sh")
    assert caught.value.returncode == 3 and caught.value.tail == ["one", "two"]


def test_progress_log_is_bounded_and_perplexity_fallback():
    progress = StageProgress(["a", "b"])
    for i in range(LOG_LINES_PER_POST * 3):
        progress.note(f"line {i}")
    text = progress.take_log()
    assert text.splitlines()[0].startswith(f"(… {LOG_LINES_PER_POST * 2} tool output lines")
    assert len(text) < 20000
    progress.begin("a", "running a")
    progress.advance(0.5)
    assert progress.snapshot()["percent"] == 25.0
    over = "perplexity: calculating perplexity over 3 chunks, n_ctx=128"
    assert _estimate([over, "[1]5.0,[2]6.0,[3]7.5,"]) == (3, 3, 7.5, None)
    assert _estimate([over, "[1]5.0,[2]6.0,"]) == (2, 3, 6.0, None)  # the tail was lost
    assert _estimate([over, "[1]5.0,", "Final estimate: PPL = 7.4000 +/- 0.10000"]) == (
        3,
        3,
        7.4,
        0.1,
    )
    assert _estimate(["no numbers here"]) is None


def test_limits_reach_the_tool_process():
    notes: list[str] = []
    limited = ToolRunner(Limits(threads=3, memory_mb=512), lambda: None, notes.append)
    tail = limited.run(["sh", "-c", "ulimit -v; echo $OMP_NUM_THREADS"], label="sh")
    assert tail == ["524288", "3"]  # KB of address space; threads for OpenMP


def test_a_check_that_raises_stops_the_tool(tmp_path: Path):
    class Stop(Exception):
        pass

    calls = {"n": 0}

    def check() -> None:
        calls["n"] += 1
        if calls["n"] > 2:
            raise Stop()

    marker = tmp_path / "survived"
    stopper = ToolRunner(Limits(), check, lambda line: None)
    with pytest.raises(Stop):
        stopper.run(["sh", "-c", f"sleep 5; touch {marker}"], label="sleep")
    import time

    time.sleep(0.3)
    assert not marker.exists()  # the tool's process group was killed, not left running


def test_disk_is_checked_before_anything_is_fetched(tmp_path: Path):
    from fleet.agent.client import ServerClient
    from fleet.agent.downloads.progress import JobsApi, Reporter
    from fleet.agent.quantize.job import Pipeline
    from fleet.agent.quantize.spec import QuantizeSpec

    answer = {
        "format": "gguf",
        "levels": ["Q8_0"],
        "outputs": {
            "Q8_0": {"name": "m-Q8_0", "path": "quantized/m-Q8_0.gguf", "expected_bytes": 10**15}
        },
        "work_bytes": 2 * 10**15,
        "source": {
            "repo_id": "acme/m",
            "commit": "a" * 40,
            "format": "safetensors",
            "files": [{"path": "model.safetensors", "size": 10**12, "sha256": "b" * 64}],
        },
    }
    client = ServerClient("http://127.0.0.1:9")
    spec = QuantizeSpec.from_claim(7, answer, client.server, None)
    progress = StageProgress([])
    reporter = Reporter(JobsApi(client), 7, progress, 1.0)  # type: ignore[arg-type]
    pipeline = Pipeline(spec, answer, tmp_path, client, reporter, progress, None, "node-a")
    (tmp_path / "quantize" / "job-7" / "out").mkdir(parents=True)
    with pytest.raises(QuantizeError) as caught:
        pipeline.check_disk()
    assert caught.value.code == "disk_space" and not caught.value.retryable
    assert "Not enough disk space on node-a" in caught.value.message
    assert "3301100.00 GB needed" in caught.value.message  # (1 + 2 PB + 1 TB) × 1.1
    assert not (tmp_path / "hub").exists()  # nothing fetched
