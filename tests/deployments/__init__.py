"""Tests for deployments: runtime adapters, specs, placement, rollouts and the reconciler.

``make_context`` builds the :class:`ReplicaContext` the runtime adapter tests share.
"""

from __future__ import annotations

from typing import Any

from deployments.runtimes.base import ModelInfo, ReplicaContext

COMMIT = "0123456789abcdef0123456789abcdef01234567"

GGUF_MODEL = ModelInfo(
    repo_id="acme/tiny-chat-GGUF",
    commit_sha=COMMIT,
    format="gguf",
    files=("README.md", "tiny-chat-Q8_0.gguf"),
    name="tiny-chat",
    gguf_file="tiny-chat-Q8_0.gguf",
    max_context=8192,
)
SAFETENSORS_MODEL = ModelInfo(
    repo_id="acme/tiny-chat",
    commit_sha=COMMIT,
    format="safetensors",
    files=("config.json", "model.safetensors", "tokenizer.json"),
    name="tiny-chat",
    max_context=32768,
)
ONNX_MODEL = ModelInfo(
    repo_id="acme/tiny-chat-onnx",
    commit_sha=COMMIT,
    format="onnx",
    files=("model.onnx", "tokenizer.json"),
    name="tiny-chat",
    max_context=2048,
)

GIB = 1024**3


def make_context(
    model: ModelInfo = GGUF_MODEL,
    runtime_args: dict[str, Any] | None = None,
    *,
    resources: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    image: str = "",
    host: str = "127.0.0.1",
    port: int = 18080,
) -> ReplicaContext:
    return ReplicaContext(
        deployment="tiny-chat",
        deployment_id=7,
        revision=3,
        slot=1,
        replica_id=42,
        node_id=5,
        host=host,
        port=port,
        model=model,
        runtime_args=dict(runtime_args or {}),
        resources={"cpus": 2, "memory_bytes": 4 * GIB} if resources is None else resources,
        env=dict(env or {}),
        image=image,
    )


EXPECTED_LABELS = {
    "fleet.managed": "true",
    "fleet.node": "5",
    "fleet.deployment": "tiny-chat",
    "fleet.revision": "3",
    "fleet.slot": "1",
    "fleet.replica": "42",
}
