"""The custom-image adapter: command templates, placeholders, paths and refusals."""

from __future__ import annotations

import json

import pytest

from deployments.runtimes import custom, get_adapter
from deployments.runtimes.base import ArgumentError
from deployments.runtimes.policy import hardening_violations
from tests.deployments import EXPECTED_LABELS, GIB, ONNX_MODEL, make_context

adapter = get_adapter("custom")

ONNX_ARGS = {
    "image": "registry.local:5000/fleet/onnx-server:1.0",
    "command": "python /app/serve.py --model {model_path}/model.onnx --port {port} "
    "--name {model_name}",
    "health_path": "/health",
    "metrics_path": "/metrics",
}


def onnx_context(args=None, **kwargs):
    return make_context(ONNX_MODEL, ONNX_ARGS if args is None else args, **kwargs)


def test_onnx_example_spec_in_detail():
    spec = adapter.container_spec(onnx_context())

    assert spec.image == "registry.local:5000/fleet/onnx-server:1.0"
    assert spec.entrypoint is None
    assert spec.command == [
        "python",
        "/app/serve.py",
        "--model",
        "/models/model.onnx",
        "--port",
        "18080",
        "--name",
        "tiny-chat",
    ]
    assert spec.environment == {
        "FLEET_MODEL_PATH": "/models",
        "FLEET_PORT": "18080",
        "FLEET_MODEL_NAME": "tiny-chat",
        "FLEET_HOST": "127.0.0.1",
    }
    metrics = json.loads(spec.labels.pop("fleet.metrics"))  # what the agent scrapes, and how
    assert metrics == {"port": 18080, "path": "/metrics", "table": custom.METRICS_TABLE}
    assert spec.labels == {**EXPECTED_LABELS, "fleet.runtime": "custom"}
    assert spec.mounts == [{"source": "model", "target": "/models", "read_only": True}]
    assert spec.read_only_rootfs is True
    assert spec.tmpfs == {"/tmp": "rw,size=256m"}
    assert spec.health_path == "/health"
    assert spec.metrics_path == "/metrics"
    assert spec.cap_add == []
    assert spec.user is None
    assert hardening_violations(spec, resources={"cpus": 2, "memory_bytes": 4 * GIB}) == []


def test_list_command_entrypoint_env_user_and_writable_paths():
    args = {
        "image": "ghcr.io/acme/server@sha256:" + "a" * 64,
        "entrypoint": ["/usr/bin/env"],
        "command": ["serve", "--bind={host}:{port}", "--json={{}}"],
        "env": {"OMP_NUM_THREADS": "2", "LOG_LEVEL": 1},
        "user": "1000:1000",
        "writable_paths": ["/var/cache/server"],
        "metrics_path": "",
        "context_length": 1024,
    }
    spec = adapter.container_spec(onnx_context(args, env={"TZ": "UTC"}))
    assert spec.entrypoint == ["/usr/bin/env"]
    assert spec.command == ["serve", "--bind=127.0.0.1:18080", "--json={}"]
    assert spec.environment["OMP_NUM_THREADS"] == "2"
    assert spec.environment["LOG_LEVEL"] == "1"
    assert spec.environment["TZ"] == "UTC"
    assert spec.user == "1000:1000"
    assert spec.tmpfs == {"/tmp": "rw,size=256m", "/var/cache/server": "rw,size=256m"}
    assert spec.metrics_path is None
    assert spec.health_path == "/health"
    assert adapter.context_length(adapter.validate_args(args), ONNX_MODEL) == 1024


def test_formats_context_and_gpu():
    assert set(adapter.formats) == {"gguf", "safetensors", "onnx"}
    assert adapter.context_length({}, ONNX_MODEL) == 2048
    assert adapter.needs_gpu({}, {}) is False
    assert adapter.needs_gpu({}, {"gpus": 1}) is True
    assert adapter.container_spec(onnx_context(resources={"gpus": 1})).gpus == 1
    assert adapter.default_image() == ""


def test_image_and_command_are_required():
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args({})
    assert caught.value.errors == {
        "image": "required for custom image",
        "command": "required for custom image",
    }


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("serve {model_path} {secret}", "unknown placeholder {secret}; allowed: {model_path}"),
        ("serve {port!r}", "unknown placeholder {port!r}"),
        ("serve {port:>8}", "unknown placeholder {port:>8}"),
        ("serve {model_path.__class__}", "unknown placeholder {model_path.__class__}"),
        ("serve {0}", "unknown placeholder {0}"),
        ("serve {port", "expected '}'"),
        ("serve 'unterminated", "cannot be split into words"),
    ],
)
def test_placeholders_other_than_the_known_ones_are_refused(command, message):
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args({"image": "acme/server:1", "command": command})
    assert message in caught.value.errors["command"]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("privileged", "every capability"),
        ("volumes", "host mounts are refused"),
        ("mounts", "host mounts are refused"),
        ("binds", "host mounts are refused"),
        ("docker_socket", "root on the node"),
        ("cap_add", "no capabilities"),
        ("devices", "host devices"),
        ("network_mode", "set by the platform"),
        ("ipc_mode", "host namespaces"),
        ("pid", "host namespaces"),
        ("read_only", "writable_paths"),
        ("port", "use {port}"),
    ],
)
def test_privilege_requests_are_refused_with_the_reason(key, reason):
    args = {**ONNX_ARGS, key: ["/var/run/docker.sock:/var/run/docker.sock"]}
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args(args)
    assert caught.value.errors[key].startswith("refused for custom image: ")
    assert reason in caught.value.errors[key]


@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        ({"image": "Not An Image!"}, "image", "is not allowed here"),
        ({"image": "--privileged"}, "image", "is not allowed here"),
        ({"health_path": "health"}, "health_path", "is not allowed here"),
        ({"health_path": "http://evil/health"}, "health_path", "is not allowed here"),
        ({"writable_paths": ["/"]}, "writable_paths", "is not allowed here"),
        ({"writable_paths": ["/models"]}, "writable_paths", "cannot be made writable"),
        ({"writable_paths": ["/proc/sys"]}, "writable_paths", "cannot be made writable"),
        ({"writable_paths": ["/a/../etc"]}, "writable_paths", "normalised absolute path"),
        ({"user": "root; rm -rf /"}, "user", "is not allowed here"),
        ({"env": {"BAD-NAME": "x"}}, "env", "key 'BAD-NAME' is not allowed"),
        ({"env": {"HF_TOKEN": "hf_x"}}, "env.HF_TOKEN", "no Hugging Face token"),
        ({"env": {"FLEET_PORT": "1"}}, "env.FLEET_PORT", "set by the platform"),
        ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "env.LD_PRELOAD", "arbitrary libraries"),
    ],
)
def test_bad_values(args, key, message):
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args({**ONNX_ARGS, **args})
    assert message in caught.value.errors[key]
