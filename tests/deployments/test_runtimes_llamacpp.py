"""The llama.cpp adapter: exact command lines, spec fields and argument refusals."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from deployments.runtimes import get_adapter, llamacpp
from deployments.runtimes.base import ArgumentError
from deployments.runtimes.policy import hardening_violations
from tests.deployments import (
    EXPECTED_LABELS,
    GGUF_MODEL,
    GIB,
    make_context,
)

adapter = get_adapter("llamacpp")


def test_default_spec_in_detail():
    spec = adapter.container_spec(make_context())

    assert spec.image == "ghcr.io/ggml-org/llama.cpp:server"
    assert spec.entrypoint == ["/app/llama-server"]
    assert spec.command == [
        "-m",
        "/models/tiny-chat-Q8_0.gguf",
        "--host",
        "127.0.0.1",
        "--port",
        "18080",
        "--metrics",
        "-c",
        "4096",
        "-t",
        "2",
        "-np",
        "1",
        "-ngl",
        "0",
        "--alias",
        "tiny-chat",
    ]
    assert spec.name == "fleet-tiny-chat-r3-s1-42"
    metrics = json.loads(spec.labels.pop("fleet.metrics"))  # what the agent scrapes, and how
    assert metrics == {"port": 18080, "path": "/metrics", "table": llamacpp.METRICS_TABLE}
    assert spec.labels == {**EXPECTED_LABELS, "fleet.runtime": "llamacpp"}
    assert spec.mounts == [{"source": "model", "target": "/models", "read_only": True}]
    assert spec.environment == {}
    assert spec.network_mode == "host"
    assert spec.ports == {}
    assert spec.bind_address == "127.0.0.1"
    assert spec.cap_add == []
    assert spec.read_only_rootfs is True
    assert spec.tmpfs == {"/tmp": "rw,size=256m"}
    assert spec.nano_cpus == 2_000_000_000
    assert spec.mem_limit == 4 * GIB
    assert spec.pids_limit == 512
    assert spec.gpus == 0
    assert spec.shm_size is None
    assert spec.health_path == "/health"
    assert spec.metrics_path == "/metrics"
    assert spec.post_start == []
    assert hardening_violations(spec, resources={"cpus": 2, "memory_bytes": 4 * GIB}) == []


def test_typical_args_map_to_flags_in_a_fixed_order():
    args = {
        "ctx-size": 6144,
        "threads": 6,
        "parallel": 4,
        "gpu_layers": 99,
        "flash_attn": "on",
        "cache_type_k": "q8_0",
        "cache_type_v": "q8_0",
        "cont_batching": False,
        "jinja": True,
        "batch_size": 1024,
    }
    spec = adapter.container_spec(
        make_context(runtime_args=args, image="registry.local/llama:cuda")
    )

    assert spec.image == "registry.local/llama:cuda"
    assert spec.command == [
        "-m",
        "/models/tiny-chat-Q8_0.gguf",
        "--host",
        "127.0.0.1",
        "--port",
        "18080",
        "--metrics",
        "-c",
        "6144",
        "-t",
        "6",
        "-np",
        "4",
        "-ngl",
        "99",
        "--alias",
        "tiny-chat",
        "-b",
        "1024",
        "--flash-attn",
        "on",
        "--cache-type-k",
        "q8_0",
        "--cache-type-v",
        "q8_0",
        "--no-cont-batching",
        "--jinja",
    ]
    # gpu_layers > 0 asks for a GPU even when the resources did not.
    assert spec.gpus == 1


def test_context_is_capped_at_the_models_maximum():
    assert adapter.context_length({}, GGUF_MODEL) == 4096
    assert adapter.context_length({"context_size": 16384}, GGUF_MODEL) == 8192
    assert adapter.context_length({"context_size": 2048}, GGUF_MODEL) == 2048
    unknown_max = replace(GGUF_MODEL, max_context=None)
    assert adapter.context_length({"context_size": 16384}, unknown_max) == 16384
    small = replace(GGUF_MODEL, max_context=1024)
    assert adapter.context_length({}, small) == 1024
    spec = adapter.container_spec(make_context(model=small))
    assert spec.command[spec.command.index("-c") + 1] == "1024"


def test_threads_follow_the_cpu_limit_or_are_left_to_llama_cpp():
    spec = adapter.container_spec(make_context(resources={"cpus": 3.5}))
    assert spec.command[spec.command.index("-t") + 1] == "3"
    assert spec.mem_limit is None
    spec = adapter.container_spec(make_context(resources={"cpus": 0.5}))
    assert spec.command[spec.command.index("-t") + 1] == "1"
    spec = adapter.container_spec(make_context(resources={}))
    assert "-t" not in spec.command
    assert spec.nano_cpus is None


def test_needs_gpu():
    assert adapter.needs_gpu({}, {}) is False
    assert adapter.needs_gpu({"gpu_layers": 0}, {"gpus": 0}) is False
    assert adapter.needs_gpu({"gpu_layers": 20}, {}) is True
    assert adapter.needs_gpu({}, {"gpus": 1}) is True
    assert adapter.context_length({}, GGUF_MODEL) == 4096


def test_gguf_file_found_among_the_files_when_not_named():
    model = replace(GGUF_MODEL, gguf_file=None)
    spec = adapter.container_spec(make_context(model=model))
    assert spec.command[:2] == ["-m", "/models/tiny-chat-Q8_0.gguf"]

    ambiguous = replace(GGUF_MODEL, gguf_file=None, files=("a.gguf", "b.gguf"))
    with pytest.raises(ArgumentError) as caught:
        adapter.container_spec(make_context(model=ambiguous))
    assert "exactly one .gguf file" in caught.value.errors["variant"]

    escaping = replace(GGUF_MODEL, gguf_file="../../etc/passwd.gguf")
    with pytest.raises(ArgumentError):
        adapter.container_spec(make_context(model=escaping))


def test_bridge_network_publishes_the_port_on_the_replica_address(settings):
    settings.FLEET_CONTAINER_NETWORK = "bridge"
    spec = adapter.container_spec(make_context(host="10.0.0.5"))
    assert spec.network_mode == "bridge"
    assert spec.command[spec.command.index("--host") + 1] == "0.0.0.0"  # noqa: S104
    assert spec.ports == {"18080/tcp": 18080}
    assert spec.bind_address == "10.0.0.5"
    assert hardening_violations(spec) == []


def test_configured_image(settings):
    settings.FLEET_IMAGE_LLAMACPP = "registry.internal:5000/llama.cpp:server-b6000"
    assert adapter.default_image() == "registry.internal:5000/llama.cpp:server-b6000"
    spec = adapter.container_spec(make_context())
    assert spec.image == "registry.internal:5000/llama.cpp:server-b6000"


def test_validate_args_cleans_aliases_and_types():
    cleaned = adapter.validate_args(
        {"--ctx-size": "2048", "ngl": 10, "np": 2.0, "fa": "AUTO", "cb": "true"}
    )
    assert cleaned == {
        "context_size": 2048,
        "gpu_layers": 10,
        "parallel": 2,
        "flash_attn": "auto",
        "cont_batching": True,
    }
    assert adapter.validate_args(cleaned) == cleaned  # idempotent


@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        ({"context_size": 64}, "context_size", "must be at least 128, got 64"),
        ({"context_size": "lots"}, "context_size", "must be a whole number, got 'lots'"),
        ({"threads": True}, "threads", "must be a whole number, not true/false"),
        ({"parallel": 1.5}, "parallel", "must be a whole number, got 1.5"),
        ({"gpu_layers": 5000}, "gpu_layers", "must be at most 999, got 5000"),
        ({"cache_type_k": "q2"}, "cache_type_k", "must be one of: f32, f16, bf16"),
        ({"cont_batching": "maybe"}, "cont_batching", "must be true or false"),
        ({"chat_template": "{% evil %}"}, "chat_template", "is not allowed here"),
    ],
)
def test_bad_values_are_refused_with_the_reason(args, key, message):
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args(args)
    assert message in caught.value.errors[key]


def test_unknown_argument_lists_the_known_ones():
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args({"turbo": True})
    message = caught.value.errors["turbo"]
    assert message.startswith("unknown argument 'turbo' for llama.cpp; known: context_size, ")
    assert "gpu_layers" in message


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("host", "set by the platform"),
        ("--port", "set by the platform"),
        ("model", "hub cache"),
        ("-m", "hub cache"),
        ("hf-repo", "hub cache"),
        ("api_key_file", "reads a host file"),
        ("ssl-key-file", "reads a host file"),
        ("ssl_cert_file", "reads a host file"),
        ("chat-template-file", "reads a host file"),
        ("alias", "served model name"),
        ("metrics", "always on"),
        ("slot_save_path", "read-only"),
        ("mlock", "CAP_IPC_LOCK"),
        ("lora", "another file"),
        ("rpc", "other hosts"),
    ],
)
def test_dangerous_arguments_are_refused_with_the_reason(key, reason):
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args({key: "/etc/shadow"})
    assert caught.value.errors[key].startswith("refused for llama.cpp: ")
    assert reason in caught.value.errors[key]


def test_all_errors_come_back_at_once():
    with pytest.raises(ArgumentError) as caught:
        adapter.validate_args({"host": "10.1.1.1", "threads": 0, "nope": 1})
    assert set(caught.value.errors) == {"host", "threads", "nope"}


def test_environment_cannot_carry_flags_or_tokens():
    spec = adapter.container_spec(make_context(env={"TZ": "UTC"}))
    assert spec.environment == {"TZ": "UTC"}
    with pytest.raises(ArgumentError) as caught:
        adapter.container_spec(make_context(env={"LLAMA_ARG_HOST": "10.1.1.1", "HF_TOKEN": "x"}))
    assert "LLAMA_ARG_" in caught.value.errors["env.LLAMA_ARG_HOST"]
    assert "no Hugging Face token" in caught.value.errors["env.HF_TOKEN"]
