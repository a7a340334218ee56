"""A custom image: any HTTP inference server, e.g. an ONNX Runtime server (docs/runtimes.md).

Arguments: ``image`` (required), ``command`` (a list, or one string split with shell rules;
no shell runs it), optional ``entrypoint``, ``health_path`` (``/health`` by default),
``metrics_path`` (none by default), ``env``, ``user``, ``writable_paths`` (tmpfs mounts; the
root file system stays read-only) and ``context_length`` (what placement should assume).

Placeholders in ``command`` and ``entrypoint``: ``{model_path}`` (the read-only model
directory), ``{port}``, ``{model_name}`` (the served name) and ``{host}`` (the address to
bind); ``{{`` / ``}}`` are literal braces. Any other placeholder is refused. The same values
are also in the environment as ``FLEET_MODEL_PATH``, ``FLEET_PORT``, ``FLEET_MODEL_NAME`` and
``FLEET_HOST``.

Whatever asks for more privilege is refused with the reason: ``privileged``, capabilities,
host mounts and volumes, the Docker socket, devices, host namespaces, a writable root file
system, the network mode and port.
"""

from __future__ import annotations

import posixpath
import string
from typing import Any

from deployments.runtimes.args import ENV_NAME, Arg, ArgSchema, SchemaAdapter
from deployments.runtimes.base import (
    MODEL_MOUNT,
    ArgumentError,
    ContainerSpec,
    ModelInfo,
    ReplicaContext,
    with_metrics,
)
from deployments.runtimes.policy import hardened_spec, listen_address

PLACEHOLDERS = ("model_path", "port", "model_name", "host")
DEFAULT_CONTEXT = 4096
IMAGE_PATTERN = (
    r"[a-z0-9][a-z0-9._/-]*(:[0-9]{1,5}/[a-z0-9._/-]+)?"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?"
)
HTTP_PATH = r"/[A-Za-z0-9._~/%?=&:+-]{0,255}"
WRITABLE_FORBIDDEN = ("/proc", "/sys", "/dev", MODEL_MOUNT)

_HOST_MOUNTS = "host mounts are refused: only the model directory is mounted, read-only"
_NAMESPACES = "host namespaces are never shared"


def _placeholders(words: Any) -> str | None:
    for word in words:
        try:
            fields = list(string.Formatter().parse(word))
        except ValueError as exc:
            return f"{word!r}: {exc} (write {{{{ and }}}} for literal braces)"
        for _literal, name, spec, conversion in fields:
            if name is None:
                continue
            if name not in PLACEHOLDERS or spec or conversion:
                shown = "{" + name + (f"!{conversion}" if conversion else "")
                shown += (f":{spec}" if spec else "") + "}"
                allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                return f"unknown placeholder {shown}; allowed: {allowed}"
    return None


def _writable(paths: Any) -> str | None:
    for path in paths:
        normal = posixpath.normpath(path)
        if normal == "/" or normal != path.rstrip("/"):
            return f"{path!r} must be a normalised absolute path other than /"
        if any(normal == p or normal.startswith(p + "/") for p in WRITABLE_FORBIDDEN):
            return f"{path!r} cannot be made writable"
    return None


SCHEMA = ArgSchema(
    "custom image",
    args=(
        Arg(
            "image",
            "str",
            "an image reference such as registry.example:5000/onnx-server:1.2",
            pattern=IMAGE_PATTERN,
            max_length=255,
            required=True,
        ),
        Arg(
            "command",
            "strings",
            "the command, with placeholders {model_path}, {port}, {model_name}, {host}",
            split=True,
            max_items=64,
            max_length=1024,
            check=_placeholders,
            required=True,
        ),
        Arg(
            "entrypoint",
            "strings",
            "replaces the image's entrypoint (same placeholders)",
            split=True,
            max_items=16,
            max_length=1024,
            check=_placeholders,
        ),
        Arg(
            "health_path",
            "str",
            "an HTTP path that answers 200 when ready",
            default="/health",
            pattern=HTTP_PATH,
        ),
        Arg(
            "metrics_path",
            "str",
            "an HTTP path with Prometheus text metrics (empty: none)",
            pattern=f"({HTTP_PATH})?",
        ),
        Arg(
            "env",
            "mapping",
            "environment variables",
            key_pattern=ENV_NAME.pattern.strip("^$"),
            max_length=4096,
        ),
        Arg(
            "user",
            "str",
            "the user (uid[:gid] or a name in the image) the server runs as",
            pattern=r"[0-9]{1,10}(:[0-9]{1,10})?|[a-z_][a-z0-9_-]{0,31}",
        ),
        Arg(
            "writable_paths",
            "strings",
            "absolute paths the server writes (each becomes a 256 MiB tmpfs)",
            pattern=r"/[A-Za-z0-9._/-]{1,255}",
            max_items=8,
            check=_writable,
        ),
        Arg(
            "context_length",
            "int",
            "the context the server allocates (for placement)",
            default="min(4096, the model's maximum)",
            minimum=128,
            maximum=1_048_576,
        ),
        Arg(
            "shm_size",
            "int",
            "shared memory in bytes",
            minimum=64 * 1024**2,
            maximum=64 * 1024**3,
        ),
    ),
    refused={
        "privileged": "gives the container every capability and the host's devices",
        "cap_add": "no capabilities are added back for custom images",
        "capabilities": "no capabilities are added back for custom images",
        "volumes": _HOST_MOUNTS,
        "volume": _HOST_MOUNTS,
        "mounts": _HOST_MOUNTS,
        "mount": _HOST_MOUNTS,
        "binds": _HOST_MOUNTS,
        "docker_socket": "access to the Docker engine is root on the node",
        "devices": "host devices are never mapped (GPUs come from the resources)",
        "network_mode": "set by the platform",
        "network": "set by the platform",
        "ports": "the platform allocates the port: use {port}",
        "port": "the platform allocates the port: use {port}",
        "host": "the platform chooses the bind address: use {host}",
        "ipc_mode": _NAMESPACES,
        "ipc": _NAMESPACES,
        "pid_mode": _NAMESPACES,
        "pid": _NAMESPACES,
        "userns_mode": _NAMESPACES,
        "security_opt": "the platform sets the security options",
        "read_only": "the root file system stays read-only; list writable_paths instead",
        "read_only_rootfs": "the root file system stays read-only; list writable_paths instead",
        "restart_policy": "set by the platform",
        "sysctls": "kernel parameters are not changed per container",
    },
)

# A custom image with a metrics_path is read with the names of the ONNX Runtime example in
# docs/runtimes.md (onnx_*); other names are not normalised (docs/monitoring.md).
METRICS_TABLE = {
    "requests_running": ["gauge", "onnx_requests_processing"],
    "requests_waiting": ["gauge", "onnx_requests_waiting"],
    "prompt_tokens_per_s": ["rate", "onnx_prompt_tokens_total"],
    "generated_tokens_per_s": ["rate", "onnx_generated_tokens_total"],
}


class CustomImageAdapter(SchemaAdapter):
    name = "custom"
    label = "Custom image"
    formats = ("gguf", "safetensors", "onnx")
    uses_gpu = False
    schema = SCHEMA
    env_refused_prefixes = {"FLEET_": "FLEET_* variables are set by the platform"}
    metrics_path = None
    metrics_table = METRICS_TABLE

    def default_image(self) -> str:
        return ""  # a custom runtime names its image in its arguments

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        cleaned = self.schema.clean(args)
        if "env" in cleaned:
            cleaned["env"] = self.validate_env(cleaned["env"])
        if cleaned.get("metrics_path") == "":
            del cleaned["metrics_path"]
        return cleaned

    def context_length(self, args: dict[str, Any], model: ModelInfo) -> int:
        context = int(args.get("context_length") or DEFAULT_CONTEXT)
        return min(context, model.max_context) if model.max_context else context

    def completion_request(
        self, prompt: str, max_tokens: int, *, model: str = ""
    ) -> tuple[str, dict[str, Any]]:
        """A custom image's completion API is unknown to the platform: not supported."""
        raise NotImplementedError(
            "Try it is not supported for custom images: the platform does not know their "
            "completion API. Call the replica's endpoint directly."
        )

    def container_spec(self, ctx: ReplicaContext) -> ContainerSpec:
        args = self.validate_args(ctx.runtime_args)
        env = self.validate_env(ctx.env)
        values = {
            "model_path": MODEL_MOUNT,
            "port": str(ctx.port),
            "model_name": ctx.model.name,
            "host": listen_address(ctx),
        }
        try:
            command = [word.format(**values) for word in args["command"]]
            entrypoint = (
                [word.format(**values) for word in args["entrypoint"]]
                if "entrypoint" in args
                else None
            )
        except (KeyError, IndexError, ValueError) as exc:  # validated above; belt and braces
            raise ArgumentError({"command": f"cannot fill in the placeholders: {exc}"}) from None
        environment = {
            **env,
            **args.get("env", {}),
            "FLEET_MODEL_PATH": values["model_path"],
            "FLEET_PORT": values["port"],
            "FLEET_MODEL_NAME": values["model_name"],
            "FLEET_HOST": values["host"],
        }
        tmpfs = {"/tmp": "rw,size=256m"}  # noqa: S108 - the container's tmpfs  # nosec B108
        for path in args.get("writable_paths", []):
            tmpfs[path] = "rw,size=256m"
        spec = hardened_spec(
            ctx,
            runtime=self.name,
            image=args["image"],
            entrypoint=entrypoint,
            command=command,
            environment=environment,
            health_path=args.get("health_path", self.health_path),
            metrics_path=args.get("metrics_path"),
            tmpfs=tmpfs,
            shm_size=args.get("shm_size"),
            user=args.get("user"),
        )
        return with_metrics(spec, ctx.port, METRICS_TABLE)
