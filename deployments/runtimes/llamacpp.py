"""llama.cpp's ``llama-server`` (official image ``ghcr.io/ggml-org/llama.cpp:server``).

Serves one GGUF file. The command line is
``-m /models/<file>.gguf --host H --port P --metrics -c CTX [-t THREADS] -np N -ngl L
--alias NAME`` plus the few extras a deployment may ask for (flash attention, KV cache
types, batch sizes, continuous batching, …). ``--metrics`` is always on: without it
``/metrics`` answers 501. Health is ``GET /health`` (503 while the model loads, 200 when
ready); metrics are Prometheus text at ``GET /metrics`` (``llamacpp:*``).

The official ``:server`` image is a CPU build; GPU offload (``gpu_layers`` > 0) needs a CUDA
build such as ``:server-cuda`` (``FLEET_IMAGE_LLAMACPP`` or the deployment's image).
"""

from __future__ import annotations

import posixpath
from typing import Any

from deployments.runtimes.args import Arg, ArgSchema, SchemaAdapter
from deployments.runtimes.base import (
    MODEL_MOUNT,
    ArgumentError,
    ContainerSpec,
    ModelInfo,
    ReplicaContext,
    with_metrics,
)
from deployments.runtimes.policy import hardened_spec, listen_address

IMAGE = "ghcr.io/ggml-org/llama.cpp:server"
ENTRYPOINT = ["/app/llama-server"]  # the official image's entrypoint
DEFAULT_CONTEXT = 4096
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")

# Metric names llama-server exposes with --metrics (counters end in _total). Builds differ
# slightly (the kv_cache_* gauges were dropped in 2025); monitoring treats all as optional.
METRICS = (
    "llamacpp:prompt_tokens_total",
    "llamacpp:prompt_seconds_total",
    "llamacpp:tokens_predicted_total",
    "llamacpp:tokens_predicted_seconds_total",
    "llamacpp:n_decode_total",
    "llamacpp:n_busy_slots_per_decode",
    "llamacpp:prompt_tokens_seconds",
    "llamacpp:predicted_tokens_seconds",
    "llamacpp:requests_processing",
    "llamacpp:requests_deferred",
    "llamacpp:n_tokens_max",
)

# The fleet's series from llama-server's metrics (docs/monitoring.md). It exposes no time to
# first token; its counters move when a request finishes.
METRICS_TABLE = {
    "requests_running": ["gauge", "llamacpp:requests_processing"],
    "requests_waiting": ["gauge", "llamacpp:requests_deferred"],
    "prompt_tokens_per_s": ["rate", "llamacpp:prompt_tokens_total"],
    "generated_tokens_per_s": ["rate", "llamacpp:tokens_predicted_total"],
    "time_per_token_s": [
        "ratio",
        "llamacpp:tokens_predicted_seconds_total",
        "llamacpp:tokens_predicted_total",
    ],
    "kv_cache_usage": ["gauge", "llamacpp:kv_cache_usage_ratio"],  # builds before mid-2025
}

_FILE_ARG = "loads another file from a path; the platform only mounts the variant's files"
_PLATFORM_MODEL = "the platform serves the variant's GGUF from the node's hub cache"

SCHEMA = ArgSchema(
    "llama.cpp",
    args=(
        Arg(
            "context_size",
            "int",
            "tokens of context (the KV cache), shared by the parallel slots",
            flag="-c",
            default="min(4096, the model's maximum)",
            minimum=128,
            maximum=1_048_576,
            aliases=("ctx_size", "c", "n_ctx", "context_length"),
        ),
        Arg(
            "threads",
            "int",
            "CPU threads for generation",
            flag="-t",
            default="the CPU limit rounded down (at least 1); llama.cpp's choice without one",
            minimum=1,
            maximum=512,
            aliases=("t", "n_threads"),
        ),
        Arg(
            "parallel",
            "int",
            "parallel request slots (each gets context_size / parallel tokens)",
            flag="-np",
            default=1,
            minimum=1,
            maximum=256,
            aliases=("np", "n_parallel", "parallel_slots"),
        ),
        Arg(
            "gpu_layers",
            "int",
            "layers offloaded to the GPU (0: CPU only; needs a CUDA image)",
            flag="-ngl",
            default=0,
            minimum=0,
            maximum=999,
            aliases=("ngl", "n_gpu_layers"),
        ),
        Arg(
            "batch_size",
            "int",
            "logical batch size for prompt processing",
            flag="-b",
            minimum=1,
            maximum=65536,
            aliases=("b",),
        ),
        Arg(
            "ubatch_size",
            "int",
            "physical (micro) batch size",
            flag="-ub",
            minimum=1,
            maximum=65536,
            aliases=("ub",),
        ),
        Arg(
            "flash_attn",
            "enum",
            "flash attention",
            flag="--flash-attn",
            choices=("on", "off", "auto"),
            aliases=("fa", "flash_attention"),
        ),
        Arg(
            "cache_type_k",
            "enum",
            "KV cache data type for K",
            flag="--cache-type-k",
            choices=KV_CACHE_TYPES,
            aliases=("ctk",),
        ),
        Arg(
            "cache_type_v",
            "enum",
            "KV cache data type for V (quantized V needs flash attention)",
            flag="--cache-type-v",
            choices=KV_CACHE_TYPES,
            aliases=("ctv",),
        ),
        Arg(
            "cont_batching",
            "bool",
            "continuous batching (on by default in llama-server)",
            flag="--cont-batching",
            negative_flag="--no-cont-batching",
            aliases=("cb",),
        ),
        Arg(
            "no_mmap", "bool", "read the model into memory instead of mapping it", flag="--no-mmap"
        ),
        Arg("jinja", "bool", "use the model's Jinja chat template", flag="--jinja"),
        Arg(
            "chat_template",
            "str",
            "the name of a built-in chat template (chatml, llama3, gemma, …)",
            flag="--chat-template",
            pattern=r"[a-z0-9][a-z0-9._-]{0,39}",
        ),
        Arg(
            "embeddings",
            "bool",
            "serve embeddings only",
            flag="--embeddings",
            aliases=("embedding",),
        ),
        Arg(
            "n_predict",
            "int",
            "most tokens to predict per request (-1: unlimited)",
            flag="-n",
            minimum=-1,
            maximum=1_048_576,
            aliases=("n", "predict"),
        ),
        Arg("seed", "int", "RNG seed (-1: random)", flag="-s", minimum=-1, maximum=2**32 - 1),
    ),
    refused={
        "host": "set by the platform (the replica's bind address)",
        "port": "set by the platform (the replica's port)",
        "model": _PLATFORM_MODEL,
        "m": _PLATFORM_MODEL,
        "model_url": _PLATFORM_MODEL,
        "mu": _PLATFORM_MODEL,
        "hf_repo": _PLATFORM_MODEL,
        "hf": _PLATFORM_MODEL,
        "hfr": _PLATFORM_MODEL,
        "hf_file": _PLATFORM_MODEL,
        "hff": _PLATFORM_MODEL,
        "hf_token": "no Hugging Face token goes into a container",
        "hft": "no Hugging Face token goes into a container",
        "docker_repo": _PLATFORM_MODEL,
        "dr": _PLATFORM_MODEL,
        "alias": "set by the platform (the served model name is the deployment's)",
        "a": "set by the platform (the served model name is the deployment's)",
        "metrics": "always on: the platform passes --metrics",
        "api_key": "would lock the platform's health and metrics probes out; "
        "put authentication in front of the service",
        "api_key_file": "reads a host file, and would lock the platform's probes out",
        "ssl_key_file": "reads a host file; TLS terminates in front of the service",
        "ssl_cert_file": "reads a host file; TLS terminates in front of the service",
        "chat_template_file": "reads a host file; use chat_template with a built-in name",
        "slot_save_path": "writes files to a path; the root file system is read-only",
        "log_file": "writes to a path; logs go to the container's output",
        "path": "serves static files from a path",
        "mlock": "needs CAP_IPC_LOCK, which runtime containers are not given",
        "lora": _FILE_ARG,
        "lora_scaled": _FILE_ARG,
        "control_vector": _FILE_ARG,
        "control_vector_scaled": _FILE_ARG,
        "mmproj": _FILE_ARG,
        "mmproj_url": _FILE_ARG,
        "model_draft": _FILE_ARG,
        "md": _FILE_ARG,
        "grammar_file": _FILE_ARG,
        "json_schema_file": _FILE_ARG,
        "lookup_cache_static": _FILE_ARG,
        "lookup_cache_dynamic": _FILE_ARG,
        "rpc": "sends work to other hosts",
        "props": "lets any client change the server's settings at run time",
    },
)

# The arguments the command line always carries, in this order; the rest follow.
_CORE = ("context_size", "threads", "parallel", "gpu_layers")
_EXTRAS = tuple(name for name in SCHEMA.names if name not in _CORE)


def gguf_file(model: ModelInfo) -> str:
    """The variant's GGUF path relative to the snapshot root, checked."""
    path = model.gguf_file
    if path is None:
        candidates = [f for f in model.files if f.lower().endswith(".gguf")]
        if len(candidates) != 1:
            raise ArgumentError(
                {
                    "variant": f"needs exactly one .gguf file to serve, found {len(candidates)}"
                    f" in {model.repo_id}@{model.commit_sha[:12]}"
                }
            )
        path = candidates[0]
    normal = posixpath.normpath(path)
    if (
        path.startswith("/")
        or normal.startswith("..")
        or "\x00" in path
        or not normal.lower().endswith(".gguf")
    ):
        raise ArgumentError({"variant": f"GGUF path {path!r} is not a file inside the snapshot"})
    return normal


def default_threads(resources: dict[str, Any]) -> int | None:
    cpus = resources.get("cpus")
    return max(1, int(float(cpus))) if cpus else None


class LlamaCppAdapter(SchemaAdapter):
    name = "llamacpp"
    label = "llama.cpp server"
    formats = ("gguf",)
    uses_gpu = False  # GPU only with gpu_layers > 0 (see needs_gpu)
    schema = SCHEMA
    image_setting = "FLEET_IMAGE_LLAMACPP"
    fallback_image = IMAGE
    env_refused_prefixes = {
        "LLAMA_ARG_": "llama-server reads its flags from LLAMA_ARG_* variables; "
        "use runtime arguments instead",
    }
    health_path = "/health"
    metrics_path = "/metrics"
    metric_names = METRICS
    metrics_table = METRICS_TABLE

    def needs_gpu(self, args: dict[str, Any], resources: dict[str, Any]) -> bool:
        return int(args.get("gpu_layers") or 0) > 0 or super().needs_gpu(args, resources)

    def context_length(self, args: dict[str, Any], model: ModelInfo) -> int:
        context = int(args.get("context_size") or DEFAULT_CONTEXT)
        return min(context, model.max_context) if model.max_context else context

    def container_spec(self, ctx: ReplicaContext) -> ContainerSpec:
        args = self.validate_args(ctx.runtime_args)
        env = self.validate_env(ctx.env)
        model_path = f"{MODEL_MOUNT}/{gguf_file(ctx.model)}"
        threads = args.get("threads") or default_threads(ctx.resources)
        gpu_layers = int(args.get("gpu_layers") or 0)
        command = [
            "-m",
            model_path,
            "--host",
            listen_address(ctx),
            "--port",
            str(ctx.port),
            "--metrics",
            "-c",
            str(self.context_length(args, ctx.model)),
        ]
        if threads:
            command += ["-t", str(threads)]
        command += [
            "-np",
            str(args.get("parallel") or 1),
            "-ngl",
            str(gpu_layers),
            "--alias",
            ctx.model.name,
        ]
        command += SCHEMA.cli(args, only=_EXTRAS)
        gpus = int(ctx.resources.get("gpus") or 0)
        if gpu_layers > 0:
            gpus = max(gpus, 1)
        spec = hardened_spec(
            ctx,
            runtime=self.name,
            image=ctx.image or self.default_image(),
            entrypoint=ENTRYPOINT,
            command=command,
            environment=env,
            health_path=self.health_path,
            metrics_path=self.metrics_path,
            gpus=gpus,
        )
        return with_metrics(spec, ctx.port, METRICS_TABLE)
