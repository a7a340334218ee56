"""vLLM's OpenAI-compatible server (official image ``vllm/vllm-openai``).

Serves the original safetensors weights on NVIDIA GPUs. The image's entrypoint is
``vllm serve``; the model is its positional argument (``--model`` is deprecated there), the
snapshot folder mounted read-only at ``/models`` from the node's hub cache. The container
never sees a Hugging Face token and runs with ``HF_HUB_OFFLINE=1``: nothing is downloaded.

Command: ``/models --served-model-name NAME --host H --port P --max-model-len CTX
--gpu-memory-utilization U --dtype D --tensor-parallel-size TP`` plus extras. GPUs requested:
``tensor_parallel_size``. Shared memory: ``shm_size`` (2 GiB by default) instead of the
host's IPC namespace. The root file system stays read-only; what vLLM, PyTorch and Triton
write (compiled kernels, caches) goes to tmpfs mounts that allow ``exec`` (Triton loads the
kernels it compiles as shared objects).

Health ``GET /health`` (200 once the engine is up), metrics ``GET /metrics`` (``vllm:*``).
"""

from __future__ import annotations

from typing import Any

from deployments.runtimes.args import Arg, ArgSchema, SchemaAdapter
from deployments.runtimes.base import (
    MODEL_MOUNT,
    ContainerSpec,
    ModelInfo,
    ReplicaContext,
    with_metrics,
)
from deployments.runtimes.policy import hardened_spec, listen_address

IMAGE = "vllm/vllm-openai:latest"
ENTRYPOINT = ["vllm", "serve"]  # the official image's entrypoint
DEFAULT_CONTEXT = 4096
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
DEFAULT_DTYPE = "auto"
DEFAULT_SHM_SIZE = 2 * 1024**3
GIB = 1024**3
HOME = "/root"  # the official image runs as root

ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": f"{HOME}/.cache/huggingface",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
TMPFS = {
    "/tmp": "rw,exec,size=1g",  # noqa: S108 - torch inductor's scratch space  # nosec B108
    f"{HOME}/.cache": "rw,exec,size=4g",  # vLLM's compile cache, the (unused) HF cache
    f"{HOME}/.triton": "rw,exec,size=1g",  # Triton's compiled kernels
    f"{HOME}/.config": "rw,size=16m",  # vLLM's config root (usage-stats marker)
}

# Metric names vLLM's /metrics exposes (V1 engine; each carries a model_name label).
METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:request_prompt_tokens",
    "vllm:request_generation_tokens",
)

# The fleet's series from vLLM's metrics (docs/monitoring.md); histograms as _sum / _count.
METRICS_TABLE = {
    "requests_running": ["gauge", "vllm:num_requests_running"],
    "requests_waiting": ["gauge", "vllm:num_requests_waiting"],
    "prompt_tokens_per_s": ["rate", "vllm:prompt_tokens_total"],
    "generated_tokens_per_s": ["rate", "vllm:generation_tokens_total"],
    "time_to_first_token_s": [
        "ratio",
        "vllm:time_to_first_token_seconds_sum",
        "vllm:time_to_first_token_seconds_count",
    ],
    "time_per_token_s": [
        "ratio",
        "vllm:inter_token_latency_seconds_sum",
        "vllm:inter_token_latency_seconds_count",
    ],
    "kv_cache_usage": ["gauge", "vllm:kv_cache_usage_perc"],  # a fraction, 0 to 1
}

_PATH = "reads a path; the platform mounts only the variant's files"
_PLATFORM = "set by the platform"
_PYTHON = "imports arbitrary Python code into the server"

SCHEMA = ArgSchema(
    "vLLM",
    args=(
        Arg(
            "max_model_len",
            "int",
            "context length (prompt + output tokens)",
            flag="--max-model-len",
            default="min(4096, the model's maximum)",
            minimum=128,
            maximum=1_048_576,
            aliases=("context_size", "context_length", "ctx_size"),
        ),
        Arg(
            "gpu_memory_utilization",
            "float",
            "fraction of each GPU's memory vLLM takes (weights, activations, KV cache)",
            flag="--gpu-memory-utilization",
            default=DEFAULT_GPU_MEMORY_UTILIZATION,
            minimum=0.05,
            maximum=0.99,
        ),
        Arg(
            "dtype",
            "enum",
            "weights and activations data type",
            flag="--dtype",
            default=DEFAULT_DTYPE,
            choices=("auto", "half", "float16", "bfloat16", "float", "float32"),
        ),
        Arg(
            "tensor_parallel_size",
            "int",
            "GPUs the model is split across (the GPUs requested)",
            flag="--tensor-parallel-size",
            default=1,
            minimum=1,
            maximum=8,
            aliases=("tp", "tensor_parallel"),
        ),
        Arg(
            "max_num_seqs",
            "int",
            "most sequences in one batch",
            flag="--max-num-seqs",
            minimum=1,
            maximum=4096,
        ),
        Arg(
            "max_num_batched_tokens",
            "int",
            "most tokens in one batch",
            flag="--max-num-batched-tokens",
            minimum=64,
            maximum=1_048_576,
        ),
        Arg(
            "enforce_eager", "bool", "no CUDA graphs (less memory, slower)", flag="--enforce-eager"
        ),
        Arg(
            "enable_prefix_caching",
            "bool",
            "reuse the KV cache of shared prompt prefixes",
            flag="--enable-prefix-caching",
            negative_flag="--no-enable-prefix-caching",
        ),
        Arg(
            "kv_cache_dtype",
            "enum",
            "KV cache data type",
            flag="--kv-cache-dtype",
            choices=("auto", "fp8", "fp8_e4m3", "fp8_e5m2"),
        ),
        Arg(
            "quantization",
            "enum",
            "weight quantization method of the checkpoint",
            flag="--quantization",
            choices=("awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "compressed-tensors"),
        ),
        Arg("seed", "int", "random seed", flag="--seed", minimum=0, maximum=2**32 - 1),
        Arg(
            "shm_size",
            "int",
            "shared memory for the container, in bytes (instead of the host's IPC namespace)",
            default=DEFAULT_SHM_SIZE,
            minimum=64 * 1024**2,
            maximum=64 * GIB,
        ),
    ),
    refused={
        "trust_remote_code": "runs arbitrary Python code from the model repository",
        "download_dir": "writes to a host path; the platform mounts the model",
        "served_model_name": "set by the platform (the deployment's name)",
        "model": "the platform serves the variant from the node's hub cache",
        "tokenizer": _PATH,
        "host": _PLATFORM,
        "port": _PLATFORM,
        "api_key": "would lock the platform's health and metrics probes out",
        "ssl_keyfile": _PATH,
        "ssl_certfile": _PATH,
        "ssl_ca_certs": _PATH,
        "chat_template": "reads a file path (or an inline template the console cannot review)",
        "allowed_local_media_path": "lets clients read files inside the container",
        "hf_token": "no Hugging Face token goes into a container",
        "revision": "the platform pins the revision",
        "code_revision": "the platform pins the revision",
        "tokenizer_revision": "the platform pins the revision",
        "config": _PATH,
        "lora_modules": _PATH,
        "enable_lora": "LoRA adapters are files the platform does not mount",
        "middleware": _PYTHON,
        "worker_extension_cls": _PYTHON,
        "tool_parser_plugin": _PYTHON,
        "logits_processors": _PYTHON,
        "ipc": "the host's IPC namespace is never shared; use shm_size",
    },
)

_CORE = ("max_model_len", "gpu_memory_utilization", "dtype", "tensor_parallel_size", "shm_size")
_EXTRAS = tuple(name for name in SCHEMA.names if name not in _CORE)


class VllmAdapter(SchemaAdapter):
    name = "vllm"
    label = "vLLM"
    formats = ("safetensors",)
    uses_gpu = True
    schema = SCHEMA
    image_setting = "FLEET_IMAGE_VLLM"
    fallback_image = IMAGE
    env_refused = {
        "TRANSFORMERS_OFFLINE": _PLATFORM,
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "lets clients load adapters from paths",
    }
    metric_names = METRICS
    metrics_table = METRICS_TABLE

    def needs_gpu(self, args: dict[str, Any], resources: dict[str, Any]) -> bool:
        return True

    def context_length(self, args: dict[str, Any], model: ModelInfo) -> int:
        context = int(args.get("max_model_len") or DEFAULT_CONTEXT)
        return min(context, model.max_context) if model.max_context else context

    def container_spec(self, ctx: ReplicaContext) -> ContainerSpec:
        args = self.validate_args(ctx.runtime_args)
        env = self.validate_env(ctx.env)
        tensor_parallel = int(args.get("tensor_parallel_size") or 1)
        command = [
            MODEL_MOUNT,
            "--served-model-name",
            ctx.model.name,
            "--host",
            listen_address(ctx),
            "--port",
            str(ctx.port),
            "--max-model-len",
            str(self.context_length(args, ctx.model)),
            "--gpu-memory-utilization",
            str(args.get("gpu_memory_utilization", DEFAULT_GPU_MEMORY_UTILIZATION)),
            "--dtype",
            str(args.get("dtype", DEFAULT_DTYPE)),
            "--tensor-parallel-size",
            str(tensor_parallel),
        ]
        command += SCHEMA.cli(args, only=_EXTRAS)
        spec = hardened_spec(
            ctx,
            runtime=self.name,
            image=ctx.image or self.default_image(),
            entrypoint=ENTRYPOINT,
            command=command,
            environment={**env, **ENVIRONMENT},
            health_path=self.health_path,
            metrics_path=self.metrics_path,
            tmpfs=TMPFS,
            shm_size=int(args.get("shm_size") or DEFAULT_SHM_SIZE),
            gpus=tensor_parallel,
        )
        return with_metrics(spec, ctx.port, METRICS_TABLE)
