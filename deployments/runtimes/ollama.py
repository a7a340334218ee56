"""Ollama (official image ``ollama/ollama``), serving a GGUF variant it imports at start.

The container runs ``ollama serve`` on ``OLLAMA_HOST=<host>:<port>``, then imports the
variant through Ollama's API with a generated Modelfile (``FROM /models/<file>.gguf`` plus
``TEMPLATE`` / ``SYSTEM`` / ``PARAMETER`` lines from the arguments) and keeps serving. The
import is done by the image's own ``ollama create`` client inside the container, not by the
agent's ``post_start`` calls, because:

- current Ollama's ``POST /api/create`` no longer reads a Modelfile: the ``FROM`` file must
  first be uploaded as a blob (``POST /api/blobs/sha256:<digest>``), which ``ollama create``
  does from the read-only model mount;
- Ollama's store is a tmpfs (below): when the engine restarts a failed container on its own,
  the import must run again, which an in-container start script does and a one-off
  post-start call from the agent would not.

So the entrypoint is a short ``/bin/sh`` script (:data:`START_SCRIPT`; the served name and
the Modelfile are its arguments), and health is ``GET /v1/models/<name>`` on Ollama's API:
404 until the model is imported, 200 once it can be served. Ollama has no Prometheus
endpoint (``metrics_path`` None).

Ollama's store. Ollama writes its model store (``OLLAMA_MODELS``) and its key pair under
``/root/.ollama``: that is a tmpfs, so the root file system stays read-only and nothing
persists on the node. The imported copy of the GGUF lives in memory and counts toward the
container's memory limit.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from deployments.runtimes.args import Arg, ArgSchema, SchemaAdapter
from deployments.runtimes.base import MODEL_MOUNT, ContainerSpec, ModelInfo, ReplicaContext
from deployments.runtimes.llamacpp import gguf_file
from deployments.runtimes.policy import hardened_spec, listen_address

IMAGE = "ollama/ollama:latest"
ENTRYPOINT = ["/bin/sh", "-c"]  # the image's own is /bin/ollama; START_SCRIPT runs it
DEFAULT_CONTEXT = 4096
HOME = "/root"  # the official image runs as root
STORE = f"{HOME}/.ollama"
MODELS_DIR = f"{STORE}/models"
# Starts the server, waits for its API, imports the model ($1: name, $2: Modelfile) and
# keeps serving; a failed import ends the container (the engine restarts it, logs say why).
START_SCRIPT = """set -eu
/bin/ollama serve &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM INT
until /bin/ollama list >/dev/null 2>&1; do
  kill -0 "$server" 2>/dev/null || exit 1
  sleep 0.2
done
printf '%s' "$2" > /tmp/Modelfile
/bin/ollama create "$1" -f /tmp/Modelfile
wait "$server"
"""
MAX_PROMPT_TEXT = 32_768


def _no_triple_quotes(value: Any) -> str | None:
    return 'must not contain """ (it ends a Modelfile block)' if '"""' in str(value) else None


PARAMETERS = ArgSchema(
    "Ollama PARAMETER",
    args=(
        Arg("num_ctx", "int", "context window", minimum=128, maximum=1_048_576),
        Arg("num_batch", "int", "prompt batch size", minimum=1, maximum=65536),
        Arg("num_gpu", "int", "layers offloaded to the GPU", minimum=0, maximum=999),
        Arg("num_thread", "int", "CPU threads", minimum=1, maximum=512),
        Arg("num_predict", "int", "most tokens to predict (-1 unlimited)", minimum=-2),
        Arg("temperature", "float", "sampling temperature", minimum=0, maximum=5),
        Arg("top_k", "int", "top-k sampling", minimum=0, maximum=1000),
        Arg("top_p", "float", "nucleus sampling", minimum=0, maximum=1),
        Arg("min_p", "float", "minimum probability", minimum=0, maximum=1),
        Arg("repeat_penalty", "float", "repetition penalty", minimum=0, maximum=5),
        Arg("repeat_last_n", "int", "window for the repetition penalty", minimum=-1),
        Arg("presence_penalty", "float", "presence penalty", minimum=-2, maximum=2),
        Arg("frequency_penalty", "float", "frequency penalty", minimum=-2, maximum=2),
        Arg("seed", "int", "random seed", minimum=-1, maximum=2**32 - 1),
        Arg("stop", "strings", "stop sequences", max_items=16, max_length=256),
    ),
    refused={
        "typical_p": "deprecated: Ollama refuses it as a model parameter",
    },
)

SCHEMA = ArgSchema(
    "Ollama",
    args=(
        Arg(
            "template",
            "str",
            "the prompt template (Modelfile TEMPLATE; Go template syntax)",
            max_length=MAX_PROMPT_TEXT,
            check=_no_triple_quotes,
        ),
        Arg(
            "system",
            "str",
            "the system prompt (Modelfile SYSTEM)",
            max_length=MAX_PROMPT_TEXT,
            check=_no_triple_quotes,
        ),
        Arg(
            "parameters",
            "mapping",
            "Modelfile PARAMETER lines",
            fields=PARAMETERS,
            max_items=32,
        ),
        Arg(
            "num_parallel",
            "int",
            "parallel requests per model (OLLAMA_NUM_PARALLEL)",
            minimum=1,
            maximum=64,
        ),
        Arg("flash_attention", "bool", "flash attention (OLLAMA_FLASH_ATTENTION)"),
        Arg(
            "kv_cache_type",
            "enum",
            "KV cache type (OLLAMA_KV_CACHE_TYPE; quantized types need flash attention)",
            choices=("f16", "q8_0", "q4_0"),
        ),
    ),
    refused={
        "host": "set by the platform (OLLAMA_HOST is the replica's address and port)",
        "port": "set by the platform (OLLAMA_HOST is the replica's address and port)",
        "models": "the platform manages Ollama's store",
        "from": "set by the platform: FROM is the variant's GGUF",
        "adapter": "LoRA adapters are files the platform does not mount",
        "adapters": "LoRA adapters are files the platform does not mount",
        "origins": "the platform fronts the service",
    },
)

METRICS: tuple[str, ...] = ()  # Ollama has no Prometheus endpoint


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class OllamaAdapter(SchemaAdapter):
    name = "ollama"
    label = "Ollama"
    formats = ("gguf",)
    uses_gpu = False
    schema = SCHEMA
    image_setting = "FLEET_IMAGE_OLLAMA"
    fallback_image = IMAGE
    env_refused = {
        "OLLAMA_HOST": "set by the platform",
        "OLLAMA_MODELS": "set by the platform",
        "OLLAMA_ORIGINS": "the platform fronts the service",
    }
    health_path = "/v1/models/{name}"  # 404 until the model is imported
    metrics_path = None
    metric_names = METRICS

    def needs_gpu(self, args: dict[str, Any], resources: dict[str, Any]) -> bool:
        num_gpu = int((args.get("parameters") or {}).get("num_gpu") or 0)
        return num_gpu > 0 or super().needs_gpu(args, resources)

    def context_length(self, args: dict[str, Any], model: ModelInfo) -> int:
        context = int((args.get("parameters") or {}).get("num_ctx") or DEFAULT_CONTEXT)
        return min(context, model.max_context) if model.max_context else context

    def parameters(self, args: dict[str, Any], model: ModelInfo) -> dict[str, Any]:
        """The model's parameters, ``num_ctx`` always set (placement counts on it)."""
        return {
            **(args.get("parameters") or {}),
            "num_ctx": self.context_length(args, model),
        }

    def modelfile(self, args: dict[str, Any], model: ModelInfo) -> str:
        """The Modelfile equivalent to what the create step asks for."""
        lines = [f"FROM {MODEL_MOUNT}/{gguf_file(model)}"]
        if args.get("template"):
            lines.append(f'TEMPLATE """{args["template"]}"""')
        if args.get("system"):
            lines.append(f'SYSTEM """{args["system"]}"""')
        for key, value in sorted(self.parameters(args, model).items()):
            values = value if isinstance(value, list) else [value]
            for item in values:
                text = _quote(item) if isinstance(item, str) else str(item)
                lines.append(f"PARAMETER {key} {text}")
        return "\n".join(lines) + "\n"

    def container_spec(self, ctx: ReplicaContext) -> ContainerSpec:
        args = self.validate_args(ctx.runtime_args)
        env = self.validate_env(ctx.env)
        environment = {
            **env,
            "OLLAMA_HOST": f"{listen_address(ctx)}:{ctx.port}",
            "OLLAMA_MODELS": MODELS_DIR,
            "OLLAMA_KEEP_ALIVE": "-1",  # keep the one model loaded
            "OLLAMA_MAX_LOADED_MODELS": "1",
            "HOME": HOME,
        }
        if "num_parallel" in args:
            environment["OLLAMA_NUM_PARALLEL"] = str(args["num_parallel"])
        if "flash_attention" in args:
            environment["OLLAMA_FLASH_ATTENTION"] = "1" if args["flash_attention"] else "0"
        if "kv_cache_type" in args:
            environment["OLLAMA_KV_CACHE_TYPE"] = args["kv_cache_type"]
        memory = ctx.resources.get("memory_bytes")
        store = "rw,mode=0700" + (f",size={int(memory)}" if memory else "")
        gpus = int(ctx.resources.get("gpus") or 0)
        if self.needs_gpu(args, ctx.resources):
            gpus = max(gpus, 1)
        return hardened_spec(
            ctx,
            runtime=self.name,
            image=ctx.image or self.default_image(),
            entrypoint=[*ENTRYPOINT, START_SCRIPT],
            command=["fleet-ollama", ctx.model.name, self.modelfile(args, ctx.model)],
            environment=environment,
            health_path=self.health_path.format(name=quote(ctx.model.name, safe="")),
            metrics_path=self.metrics_path,
            tmpfs={"/tmp": "rw,size=256m", STORE: store},  # noqa: S108 - the container's tmpfs  # nosec B108
            gpus=gpus,
        )
