"""The Ollama adapter: start script, generated Modelfile, store on tmpfs, refusals."""

from __future__ import annotations

import pytest

from deployments.runtimes import get_adapter
from deployments.runtimes.base import ArgumentError
from deployments.runtimes.ollama import START_SCRIPT
from deployments.runtimes.policy import hardening_violations
from tests.deployments import EXPECTED_LABELS, GGUF_MODEL, GIB, make_context

adapter = get_adapter("ollama")


def test_default_spec_in_detail():
    spec = adapter.container_spec(make_context())

    assert spec.image == "ollama/ollama:latest"
    assert spec.entrypoint == ["/bin/sh", "-c", START_SCRIPT]
    assert spec.command == [
        "fleet-ollama",
        "tiny-chat",
        "FROM /models/tiny-chat-Q8_0.gguf\nPARAMETER num_ctx 4096\n",
    ]
    assert spec.environment == {
        "OLLAMA_HOST": "127.0.0.1:18080",
        "OLLAMA_MODELS": "/root/.ollama/models",
        "OLLAMA_KEEP_ALIVE": "-1",
        "OLLAMA_MAX_LOADED_MODELS": "1",
        "HOME": "/root",
    }
    assert spec.labels == {**EXPECTED_LABELS, "fleet.runtime": "ollama"}
    assert spec.mounts == [{"source": "model", "target": "/models", "read_only": True}]
    # The store is a tmpfs (bounded by the memory limit): the root file system stays read-only.
    assert spec.read_only_rootfs is True
    assert spec.tmpfs == {
        "/tmp": "rw,size=256m",
        "/root/.ollama": f"rw,mode=0700,size={4 * GIB}",
    }
    assert spec.cap_add == []
    assert spec.health_path == "/v1/models/tiny-chat"
    assert spec.metrics_path is None
    assert spec.post_start == []
    assert spec.gpus == 0
    assert hardening_violations(spec, resources={"cpus": 2, "memory_bytes": 4 * GIB}) == []


def test_start_script_serves_imports_then_waits():
    lines = START_SCRIPT.splitlines()
    assert lines[0] == "set -eu"
    assert lines[1] == "/bin/ollama serve &"
    assert '/bin/ollama create "$1" -f /tmp/Modelfile' in lines
    assert lines[-1] == 'wait "$server"'


def test_modelfile_from_template_system_and_parameters():
    args = adapter.validate_args(
        {
            "template": "{{ .System }}\n{{ .Prompt }}",
            "system": 'You answer in "one" line.',
            "parameters": {
                "temperature": 0.2,
                "top_k": 40,
                "stop": ["<|im_end|>", "</s>"],
                "num_ctx": 16384,
            },
        }
    )
    assert adapter.modelfile(args, GGUF_MODEL) == (
        "FROM /models/tiny-chat-Q8_0.gguf\n"
        'TEMPLATE """{{ .System }}\n{{ .Prompt }}"""\n'
        'SYSTEM """You answer in "one" line."""\n'
        "PARAMETER num_ctx 8192\n"  # capped at the model's maximum
        'PARAMETER stop "<|im_end|>"\n'
        'PARAMETER stop "</s>"\n'
        "PARAMETER temperature 0.2\n"
        "PARAMETER top_k 40\n"
    )
    assert adapter.context_length(args, GGUF_MODEL) == 8192
    spec = adapter.container_spec(make_context(runtime_args=args))
    assert spec.command[2] == adapter.modelfile(args, GGUF_MODEL)


def test_server_settings_become_environment():
    spec = adapter.container_spec(
        make_context(
            runtime_args={"num_parallel": 2, "flash_attention": True, "kv_cache_type": "q8_0"},
            resources={},
        )
    )
    assert spec.environment["OLLAMA_NUM_PARALLEL"] == "2"
    assert spec.environment["OLLAMA_FLASH_ATTENTION"] == "1"
    assert spec.environment["OLLAMA_KV_CACHE_TYPE"] == "q8_0"
    assert spec.tmpfs["/root/.ollama"] == "rw,mode=0700"  # no memory limit, no size


def test_gpu():
    assert adapter.needs_gpu({}, {}) is False
    assert adapter.needs_gpu({"parameters": {"num_gpu": 99}}, {}) is True
    spec = adapter.container_spec(make_context(runtime_args={"parameters": {"num_gpu": 99}}))
    assert spec.gpus == 1
    assert adapter.container_spec(make_context(resources={"gpus": 2})).gpus == 2


def test_configured_image(settings):
    settings.FLEET_IMAGE_OLLAMA = "mirror.local/ollama/ollama:0.12"
    assert adapter.container_spec(make_context()).image == "mirror.local/ollama/ollama:0.12"


@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        ({"parameters": {"warp": 9}}, "parameters.warp", "unknown argument 'warp' for Ollama"),
        ({"parameters": {"temperature": 9}}, "parameters.temperature", "at most 5"),
        ({"parameters": {"top_p": "high"}}, "parameters.top_p", "must be a number"),
        ({"parameters": {"typical_p": 0.5}}, "parameters.typical_p", "deprecated"),
        ({"parameters": {"stop": [1]}}, "parameters.stop", "every item must be text"),
        ({"parameters": "temperature 1"}, "parameters", "must be an object"),
        ({"system": 'a """ b'}, "system", 'must not contain """'),
        ({"kv_cache_type": "q2_K"}, "kv_cache_type", "must be one of: f16, q8_0, q4_0"),
    ],
)
def test_bad_values(args, key, message):
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args(args)
    assert message in caught.value.errors[key]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("host", "OLLAMA_HOST"),
        ("models", "store"),
        ("from", "FROM is the variant's GGUF"),
        ("adapter", "does not mount"),
    ],
)
def test_refused_arguments(key, reason):
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args({key: "x"})
    assert caught.value.errors[key].startswith("refused for Ollama: ")
    assert reason in caught.value.errors[key]


def test_refused_environment():
    with pytest.raises(ArgumentError) as caught:
        adapter.container_spec(make_context(env={"OLLAMA_HOST": "0.0.0.0:11434"}))
    assert "set by the platform" in caught.value.errors["env.OLLAMA_HOST"]
