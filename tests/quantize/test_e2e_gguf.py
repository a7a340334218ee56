"""End to end: a real agent quantizes a real tiny Llama with llama.cpp's own tools.

safetensors (SentencePiece tokenizer) → GGUF F16 → Q8_0 and Q4_K_M, each registered with
lineage, perplexity and tokens/s; the Q4_K_M variant, deployed with the llama.cpp runtime on
a real agent and the locally built llama-server image, answers a completion. Re-asking reuses
the outputs; a cancelled job stops its tool and leaves nothing behind.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.template.defaultfilters import floatformat
from django.test import Client

from core import job_services
from core.jobs import Job, JobState
from deployments import services as deployment_services
from models_catalog import store
from models_catalog.models import Variant, VariantEvaluation
from models_catalog.quantize.services import eval_text, request_quantization
from tests.deployments import e2e
from tests.downloads_support import wait_job
from tests.fleet.agents import wait_until
from tests.quantize.conftest import publish_source, start_quantizer

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]


def test_gguf_q8_q4km_registered_evaluated_and_deployed(
    stage: e2e.Stage, llama_cpp_tools: Path, quantize_model_dir: Path
):
    runner, ctx = stage.runner, stage.ctx
    stage.configure()
    source = publish_source(stage.hub_root, ctx, quantize_model_dir)
    suffix = uuid.uuid4().hex[:6]
    agent, node = start_quantizer(runner, f"qz-{suffix}", llama_cpp_tools)

    job = request_quantization(ctx, source, fmt="gguf", levels=["Q8_0", "q4_k_m"], threads=2)
    assert job.node_id == node.pk  # the only ready node with room
    assert job.params["levels"] == ["Q8_0", "Q4_K_M"]
    job = wait_job(job.pk, 300, message=runner.tails)
    assert job.state == JobState.SUCCEEDED, f"{job.error}\n{job.log_tail[-3000:]}"
    assert job.progress["percent"] == 100.0
    assert "llama-quantize" in job.log_tail and "convert_hf_to_gguf.py" in job.log_tail

    outputs = {v.quantization: v for v in Variant.objects.filter(parent=source)}
    assert set(outputs) == {"Q8_0", "Q4_K_M"}
    text_sha = eval_text()[1]
    for level, variant in outputs.items():
        lineage = variant.produced_by
        assert lineage["source"] == "quantize" and lineage["job"] == job.pk
        assert lineage["tool"] == "llama.cpp" and "0.3.36" in lineage["tool_version"]
        assert lineage["parameters"]["type"] == level
        assert level in lineage["parameters"]["arguments"]
        assert lineage["node"] == node.name and lineage["duration_s"] > 0
        (file,) = variant.files.all()
        assert file.path == f"quantized/{variant.name}.gguf"
        assert file.sha256 == lineage["sha256"] and file.size == variant.size
        assert store.sha256_of(store.blob_path(file.sha256)) == file.sha256  # really stored
        assert variant.bits_per_weight and variant.bits_per_weight < 16
        evaluation = VariantEvaluation.objects.get(variant=variant)
        assert evaluation.perplexity and evaluation.perplexity > 1
        assert evaluation.baseline_name == "F16" and evaluation.baseline_perplexity
        assert evaluation.tokens_per_second and evaluation.tokens_per_second > 0
        assert evaluation.text_sha256 == text_sha and evaluation.node_name == node.name
    q8, q4 = outputs["Q8_0"], outputs["Q4_K_M"]
    assert q4.size < q8.size < source.size
    assert q4.bits_per_weight < q8.bits_per_weight
    # Q8_0 is near-lossless against F16; Q4_K_M loses more.
    q8_eval, q4_eval = q8.evaluations.get(), q4.evaluations.get()
    assert abs(q8_eval.perplexity_delta) <= abs(q4_eval.perplexity_delta) + 1e-6

    # The model page's comparison table shows them with their figures.
    client = Client()
    client.force_login(ctx.user)
    table = client.get(f"/catalog/{source.model_id}/variants/comparison/").content.decode()
    row = table.split(f'data-variant="{q4.name}"', 1)[1].split("</tr>", 1)[0]
    assert floatformat(q4_eval.perplexity, 3) in row and "vs F16" in row
    assert floatformat(q4_eval.tokens_per_second, 1) in row and f"job #{job.pk}" in row

    # The same request again: nothing to make, the outputs are reused at once.
    again = request_quantization(ctx, source, fmt="gguf", levels=["Q4_K_M", "Q8_0"])
    assert again.pk != job.pk and again.state == JobState.SUCCEEDED
    assert set(again.result["reused"]) == {"Q8_0", "Q4_K_M"}
    assert Variant.objects.filter(parent=source).count() == 2

    # The Q4_K_M output deploys with the llama.cpp runtime and answers.
    loop = e2e.DeploymentLoop()
    loop.start()
    try:
        deployment = deployment_services.create_deployment(
            ctx, f"qz-{suffix}", e2e.llamacpp_spec(q4, 1)
        )
        wait_until(
            lambda: e2e.settled(deployment, 1),
            120,
            message=lambda: e2e.explain(deployment, runner, loop),
        )
        (replica,) = e2e.available(deployment)
        answer = e2e.completion(replica.host_port)
        assert answer["tokens_predicted"] > 0
    finally:
        loop.stop()
        e2e.remove_containers(stage.docker_client, f"qz-{suffix}")
    assert agent.running()


def test_cancel_stops_the_tool_and_cleans_up(
    stage: e2e.Stage, llama_cpp_tools: Path, quantize_model_dir: Path
):
    runner, ctx = stage.runner, stage.ctx
    source = publish_source(stage.hub_root, ctx, quantize_model_dir)
    agent, _node = start_quantizer(runner, f"qzc-{uuid.uuid4().hex[:6]}", llama_cpp_tools)
    job = request_quantization(ctx, source, fmt="gguf", levels=["Q8_0"])

    def converting() -> Job | None:
        current = Job.objects.get(pk=job.pk)
        assert current.state in (JobState.QUEUED, JobState.RUNNING), current.error
        return current if "convert" in (current.progress or {}).get("stage", "") else None

    wait_until(converting, 120, interval=0.05, message=runner.tails)
    job_services.request_cancel(ctx, job)
    job = wait_job(job.pk, 60, message=runner.tails)
    assert job.state == JobState.CANCELLED, job.error
    assert "tool was killed" in job.log_tail
    work = agent.data_dir / "quantize" / f"job-{job.pk}"
    wait_until(lambda: not work.exists(), 10, message="the work folder stays")  # after its report
    assert not Variant.objects.filter(parent=source).exists()
    # no converter left running: the tool's whole process group was stopped
    assert not [p for p in _descendants(agent.pid) if "convert_hf_to_gguf" in " ".join(p)]


def _descendants(pid: int) -> list[list[str]]:
    import psutil

    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.append(child.cmdline())
        except psutil.NoSuchProcess:
            continue
    return found


def test_killed_agent_resumes_without_redoing_finished_work(
    stage: e2e.Stage, llama_cpp_tools: Path, quantize_model_dir: Path
):
    runner, ctx = stage.runner, stage.ctx
    source = publish_source(stage.hub_root, ctx, quantize_model_dir)
    name = f"qzk-{uuid.uuid4().hex[:6]}"
    agent, node = start_quantizer(runner, name, llama_cpp_tools)
    job = request_quantization(ctx, source, fmt="gguf", levels=["Q8_0", "Q4_K_M"])

    def past_conversion() -> Job | None:
        current = Job.objects.get(pk=job.pk)
        assert current.state in (JobState.QUEUED, JobState.RUNNING), current.error
        stage_now = (current.progress or {}).get("stage", "")
        return current if stage_now.startswith(("evaluating", "quantizing")) else None

    wait_until(past_conversion, 120, interval=0.02, message=runner.tails)
    agent.kill()  # kill -9 the agent's process group mid-job
    assert not Variant.objects.filter(parent=source).exists()  # nothing half-registered
    assert (agent.data_dir / "quantize" / f"job-{job.pk}" / "f16.gguf").is_file()

    restarted = runner.start(
        name, data_dir=agent.data_dir, env={"FLEET_LLAMA_CPP_TOOLS": str(llama_cpp_tools)}
    )
    job = wait_job(job.pk, 300, message=runner.tails)
    assert job.state == JobState.SUCCEEDED, f"{job.error}\n{job.log_tail[-3000:]}"
    assert job.attempts == 2 and job.node_id == node.pk
    assert "resuming from" in job.log_tail
    assert job.log_tail.count("convert_hf_to_gguf.py") == 1  # the F16 file was kept
    assert {v.quantization for v in Variant.objects.filter(parent=source)} == {"Q8_0", "Q4_K_M"}
    work = agent.data_dir / "quantize" / f"job-{job.pk}"
    wait_until(lambda: not work.exists(), 10, message="the work folder stays")  # after its report
    restarted.stop()


def test_rejected_tokenizer_fails_the_job_cleanly(
    stage: e2e.Stage, llama_cpp_tools: Path, quantize_model_dir: Path, tmp_path: Path
):
    from tests.quantize.models import byte_level_bpe_model

    runner, ctx = stage.runner, stage.ctx
    bpe = byte_level_bpe_model(quantize_model_dir, tmp_path / "bpe")
    source = publish_source(stage.hub_root, ctx, bpe)
    start_quantizer(runner, f"qzb-{uuid.uuid4().hex[:6]}", llama_cpp_tools)
    job = request_quantization(ctx, source, fmt="gguf", levels=["Q8_0"])
    job = wait_job(job.pk, 180, message=runner.tails)
    assert job.state == JobState.FAILED and job.attempts == 1  # not retried: it cannot help
    assert "rejected the model's tokenizer" in job.error
    assert "Traceback" not in job.error and job.result["code"] == "tokenizer_rejected"
    assert not Variant.objects.filter(parent=source).exists()
