"""The contract every runtime adapter fulfils.

An adapter is the only place that knows a runtime's image, flags, health endpoint and metrics
endpoint. It validates runtime arguments and turns (variant, deployment spec, replica slot)
into a :class:`ContainerSpec`: plain JSON-safe data that the control plane sends to the node's
agent, which runs it with the Docker engine. The agent resolves the symbolic mount source
``"model"`` to the variant's snapshot folder in its hub cache.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Labels every managed container carries (the agent's Docker driver uses the same keys).
LABEL_MANAGED = "fleet.managed"
LABEL_NODE = "fleet.node"
LABEL_DEPLOYMENT = "fleet.deployment"
LABEL_REVISION = "fleet.revision"
LABEL_SLOT = "fleet.slot"
LABEL_REPLICA = "fleet.replica"

MODEL_SOURCE = "model"  # mount source resolved by the agent to the variant's snapshot dir
MODEL_MOUNT = "/models"  # where every adapter mounts it, read-only


@dataclass(frozen=True)
class ModelInfo:
    """What an adapter needs to know about the variant it serves."""

    repo_id: str
    commit_sha: str
    format: str  # safetensors | gguf | onnx
    files: tuple[str, ...]  # paths relative to the snapshot root
    name: str  # served model name (the deployment name by default)
    gguf_file: str | None = None  # the .gguf path relative to the snapshot root
    max_context: int | None = None


@dataclass(frozen=True)
class ReplicaContext:
    deployment: str
    deployment_id: int
    revision: int
    slot: int
    replica_id: int
    node_id: int
    host: str  # address the server binds to (127.0.0.1 or 0.0.0.0)
    port: int  # the port it listens on (host networking) or publishes
    model: ModelInfo
    runtime_args: dict[str, Any]
    resources: dict[str, Any]  # cpus (float), memory_bytes (int), gpus (int)
    env: dict[str, str]
    image: str  # the runtime's image as configured for this install (may be overridden)


@dataclass
class ContainerSpec:
    image: str
    name: str
    command: list[str]
    entrypoint: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    mounts: list[dict[str, Any]] = field(default_factory=list)  # {source, target, read_only}
    network_mode: str = "host"
    ports: dict[str, int] = field(default_factory=dict)  # "8080/tcp" -> host port (bridge)
    bind_address: str = "127.0.0.1"
    cap_add: list[str] = field(default_factory=list)  # on top of cap_drop=ALL
    read_only_rootfs: bool = True
    tmpfs: dict[str, str] = field(default_factory=lambda: {"/tmp": "rw,size=256m"})  # noqa: S108 - the container's tmpfs  # nosec B108
    shm_size: int | None = None
    nano_cpus: int | None = None
    mem_limit: int | None = None
    pids_limit: int = 512
    gpus: int = 0  # device requests for NVIDIA GPUs
    user: str | None = None
    health_path: str = "/health"
    metrics_path: str | None = "/metrics"
    health_port: int = 0  # the port the agent probes; 0 = same as the serving port
    post_start: list[dict[str, Any]] = field(default_factory=list)  # HTTP calls after healthy

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ArgumentError(ValueError):
    """A runtime argument is unknown, mistyped, out of range or refused as dangerous."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors.items()))
        self.errors = errors


class RuntimeAdapter:
    name: str = ""
    label: str = ""
    formats: tuple[str, ...] = ()  # variant formats it can serve
    uses_gpu: bool = False  # whether placement should look at VRAM (may depend on args)
    # The fleet series its metrics normalise to (deployments/runtimes/*.py: METRICS_TABLE).
    metrics_table: dict[str, list[str]] = {}

    def default_image(self) -> str:
        raise NotImplementedError

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """Cleaned arguments, or :class:`ArgumentError` naming each bad key and why."""
        raise NotImplementedError

    def needs_gpu(self, args: dict[str, Any], resources: dict[str, Any]) -> bool:
        return int(resources.get("gpus") or 0) > 0

    def context_length(self, args: dict[str, Any], model: ModelInfo) -> int:
        """The context the runtime will allocate (for footprint and placement)."""
        raise NotImplementedError

    def metrics_path_for(self, args: dict[str, Any]) -> str | None:
        """The HTTP path of a replica's Prometheus metrics, or None if the runtime has none.

        The adapter's ``metrics_path``, unless its (validated) arguments name one (only
        adapters whose schema accepts ``metrics_path``, such as the custom image, can).
        """
        path = args.get("metrics_path") or getattr(self, "metrics_path", None)
        return str(path) if path else None

    def series_for(self, args: dict[str, Any]) -> frozenset[str]:
        """The normalised per-replica series its replicas expose with these arguments."""
        if self.metrics_path_for(args) is None:
            return frozenset()
        return frozenset(self.metrics_table)

    def container_spec(self, ctx: ReplicaContext) -> ContainerSpec:
        raise NotImplementedError

    def completion_request(
        self, prompt: str, max_tokens: int, *, model: str = ""
    ) -> tuple[str, dict[str, Any]]:
        """The path and JSON body of one text completion (the "try it" box).

        The default is the OpenAI-compatible ``POST /v1/completions`` every built-in runtime
        serves; ``model`` is the served model name. Adapters without a known completion API
        raise :class:`NotImplementedError` with a message for the person trying.
        """
        body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "stream": False}
        if model:
            body["model"] = model
        return "/v1/completions", body

    def parse_completion(self, answer: Any) -> tuple[str, int | None, int | None]:
        """(text, prompt tokens, completion tokens) from a completion answer; ValueError if
        the answer is not one. Token counts are None where the runtime does not say."""
        if not isinstance(answer, dict):
            raise ValueError("the answer is not a JSON object")
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ValueError("the answer has no choices")
        text = choices[0].get("text")
        if not isinstance(text, str):
            raise ValueError("the answer's first choice has no text")
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            usage = {}

        def count(key: str) -> int | None:
            value = usage.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return text, count("prompt_tokens"), count("completion_tokens")


def base_labels(ctx: ReplicaContext) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_NODE: str(ctx.node_id),
        LABEL_DEPLOYMENT: ctx.deployment,
        LABEL_REVISION: str(ctx.revision),
        LABEL_SLOT: str(ctx.slot),
        LABEL_REPLICA: str(ctx.replica_id),
    }


def container_name(ctx: ReplicaContext) -> str:
    return f"fleet-{ctx.deployment}-r{ctx.revision}-s{ctx.slot}-{ctx.replica_id}"


# --- Metrics normalisation (docs/monitoring.md) ------------------------------------------------
# The agent cannot import the adapters (no Django there), so each replica's container carries
# its runtime's normalisation table in this label, with the port and path to scrape:
# {"port": 20001, "path": "/metrics", "table": {fleet series: rule}}. A rule is
# ["gauge", metric], ["rate", counter] (per second over the collection interval) or
# ["ratio", counter_a, counter_b] (change of a over change of b: mean seconds per token, a
# histogram's _sum over _count). Metrics absent from a scrape are skipped, never zero.
LABEL_METRICS = "fleet.metrics"
MetricsTable = dict[str, list[str]]


def with_metrics(spec: ContainerSpec, port: int, table: MetricsTable) -> ContainerSpec:
    """``spec`` with the metrics label, when it has a metrics path (else unchanged)."""
    if spec.metrics_path:
        import json

        spec.labels[LABEL_METRICS] = json.dumps(
            {"port": port, "path": spec.metrics_path, "table": table},
            sort_keys=True,
            separators=(",", ":"),
        )
    return spec
