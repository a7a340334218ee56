"""The vLLM adapter: exact command lines, offline environment, tmpfs, shm, GPUs, refusals."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from deployments.runtimes import get_adapter, vllm
from deployments.runtimes.base import ArgumentError
from deployments.runtimes.policy import hardening_violations
from tests.deployments import EXPECTED_LABELS, GIB, SAFETENSORS_MODEL, make_context

adapter = get_adapter("vllm")


def vllm_context(args=None, **kwargs):
    return make_context(SAFETENSORS_MODEL, args, **kwargs)


def test_default_spec_in_detail():
    spec = adapter.container_spec(vllm_context(resources={"memory_bytes": 32 * GIB}))

    assert spec.image == "vllm/vllm-openai:latest"
    assert spec.entrypoint == ["vllm", "serve"]
    assert spec.command == [
        "/models",
        "--served-model-name",
        "tiny-chat",
        "--host",
        "127.0.0.1",
        "--port",
        "18080",
        "--max-model-len",
        "4096",
        "--gpu-memory-utilization",
        "0.9",
        "--dtype",
        "auto",
        "--tensor-parallel-size",
        "1",
    ]
    assert spec.environment == {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": "/root/.cache/huggingface",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    assert not any("TOKEN" in key for key in spec.environment)
    metrics = json.loads(spec.labels.pop("fleet.metrics"))  # what the agent scrapes, and how
    assert metrics == {"port": 18080, "path": "/metrics", "table": vllm.METRICS_TABLE}
    assert spec.labels == {**EXPECTED_LABELS, "fleet.runtime": "vllm"}
    assert spec.mounts == [{"source": "model", "target": "/models", "read_only": True}]
    assert spec.shm_size == 2 * GIB
    assert spec.gpus == 1
    assert spec.read_only_rootfs is True
    assert spec.tmpfs == {
        "/tmp": "rw,exec,size=1g",
        "/root/.cache": "rw,exec,size=4g",
        "/root/.triton": "rw,exec,size=1g",
        "/root/.config": "rw,size=16m",
    }
    assert spec.mem_limit == 32 * GIB
    assert spec.cap_add == []
    assert spec.health_path == "/health"
    assert spec.metrics_path == "/metrics"
    assert hardening_violations(spec, resources={"memory_bytes": 32 * GIB}) == []


def test_typical_args():
    args = {
        "max_model_len": 16384,
        "gpu_memory_utilization": 0.85,
        "dtype": "bfloat16",
        "tp": 2,
        "max_num_seqs": 64,
        "enforce_eager": True,
        "enable_prefix_caching": False,
        "kv_cache_dtype": "fp8",
        "shm_size": 4 * GIB,
    }
    spec = adapter.container_spec(vllm_context(args))
    assert spec.command == [
        "/models",
        "--served-model-name",
        "tiny-chat",
        "--host",
        "127.0.0.1",
        "--port",
        "18080",
        "--max-model-len",
        "16384",
        "--gpu-memory-utilization",
        "0.85",
        "--dtype",
        "bfloat16",
        "--tensor-parallel-size",
        "2",
        "--max-num-seqs",
        "64",
        "--enforce-eager",
        "--no-enable-prefix-caching",
        "--kv-cache-dtype",
        "fp8",
    ]
    assert spec.gpus == 2  # one GPU per tensor-parallel rank
    assert spec.shm_size == 4 * GIB


def test_context_length_and_gpu():
    assert adapter.context_length({}, SAFETENSORS_MODEL) == 4096
    assert adapter.context_length({"max_model_len": 65536}, SAFETENSORS_MODEL) == 32768
    assert adapter.context_length({}, replace(SAFETENSORS_MODEL, max_context=2048)) == 2048
    assert adapter.needs_gpu({}, {}) is True
    assert adapter.uses_gpu is True
    assert adapter.formats == ("safetensors",)


def test_configured_image(settings):
    settings.FLEET_IMAGE_VLLM = "registry.internal/vllm/vllm-openai:v0.11.0"
    assert (
        adapter.container_spec(vllm_context()).image == "registry.internal/vllm/vllm-openai:v0.11.0"
    )


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("trust_remote_code", "arbitrary Python code"),
        ("--trust-remote-code", "arbitrary Python code"),
        ("download_dir", "host path"),
        ("served-model-name", "set by the platform"),
        ("model", "hub cache"),
        ("tokenizer", "reads a path"),
        ("host", "set by the platform"),
        ("port", "set by the platform"),
        ("hf_token", "no Hugging Face token"),
        ("revision", "pins the revision"),
        ("chat_template", "file path"),
        ("allowed_local_media_path", "read files"),
        ("middleware", "arbitrary Python"),
        ("ipc", "shm_size"),
    ],
)
def test_dangerous_arguments_are_refused_with_the_reason(key, reason):
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args({key: True})
    assert caught.value.errors[key].startswith("refused for vLLM: ")
    assert reason in caught.value.errors[key]


@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization", "at most 0.99"),
        ({"gpu_memory_utilization": "most"}, "gpu_memory_utilization", "must be a number"),
        ({"dtype": "int3"}, "dtype", "must be one of: auto, half"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size", "at least 1"),
        ({"shm_size": 1024}, "shm_size", "at least 67108864"),
        ({"quantization": "magic"}, "quantization", "must be one of"),
    ],
)
def test_bad_values(args, key, message):
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args(args)
    assert message in caught.value.errors[key]


def test_unknown_argument():
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args({"speculative_config": "{}"})
    assert caught.value.errors["speculative_config"].startswith(
        "unknown argument 'speculative_config' for vLLM; known: max_model_len, "
    )


def test_no_token_in_the_environment():
    with pytest.raises(ArgumentError) as caught:
        adapter.container_spec(vllm_context(env={"HUGGING_FACE_HUB_TOKEN": "hf_x"}))
    assert "no Hugging Face token" in caught.value.errors["env.HUGGING_FACE_HUB_TOKEN"]
    # The platform's offline switch cannot be turned off by the deployment.
    with pytest.raises(ArgumentError):
        adapter.container_spec(vllm_context(env={"HF_HUB_OFFLINE": "0"}))
    spec = adapter.container_spec(vllm_context(env={"CUDA_LAUNCH_BLOCKING": "1"}))
    assert spec.environment["CUDA_LAUNCH_BLOCKING"] == "1"
    assert spec.environment["HF_HUB_OFFLINE"] == "1"
