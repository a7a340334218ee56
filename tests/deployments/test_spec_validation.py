"""The deployment spec: defaults, per-field errors, runtime arguments via the adapters,
licence policy, plain env without secrets, and the merge-patch rules."""

from __future__ import annotations

from typing import Any

import pytest

from deployments.autoscaling import normalized_defaults
from deployments.spec import SpecError, merge_spec, normalize_spec, parse_bytes
from tests.deployments.builders import gguf_variant, qwen, safetensors_variant, spec

pytestmark = pytest.mark.django_db


def errors_of(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        normalize_spec(raw)
    return caught.value.flat


def test_defaults_fill_every_key():
    variant = gguf_variant()
    normalized = normalize_spec(spec(variant))
    assert normalized == {
        "variant": variant.pk,
        "runtime": "llamacpp",
        "image": "",
        "runtime_args": {},
        "replicas": 1,
        "resources": {"cpus": None, "memory_bytes": None, "gpus": 0},
        "placement": {"selector": {}, "strategy": "spread"},
        "port": None,
        "env": {},
        "strategy": {
            "max_surge": 1,
            "max_unavailable": 0,
            "min_healthy_seconds": 10,
            "healthy_deadline_seconds": 300,
            "progress_deadline_seconds": 600,
            "auto_revert": True,
        },
        "autoscaling": normalized_defaults(),
    }
    assert normalize_spec(normalized) == normalized, "normalizing is idempotent"


def test_runtime_args_are_cleaned_by_the_adapter():
    variant = gguf_variant()
    normalized = normalize_spec(spec(variant, runtime_args={"ctx-size": "8192", "parallel": 2}))
    assert normalized["runtime_args"] == {"context_size": 8192, "parallel": 2}


def test_unknown_and_refused_runtime_args_name_the_key_and_why():
    variant = gguf_variant()
    errors = errors_of(spec(variant, runtime_args={"contxt_size": 1, "api_key": "x"}))
    assert "unknown argument 'contxt_size'" in errors["runtime_args.contxt_size"]
    assert "refused for llama.cpp" in errors["runtime_args.api_key"]


def test_variant_must_exist_and_suit_the_runtime():
    assert (
        "No catalog variant #999999"
        in errors_of({"variant": 999999, "runtime": "llamacpp"})["variant"]
    )
    original = safetensors_variant()
    errors = errors_of({"variant": original.pk, "runtime": "llamacpp"})
    assert "serves gguf variants" in errors["runtime"]
    assert "is safetensors" in errors["runtime"]


def test_licence_policy_refuses_with_the_catalogs_reason():
    variant = gguf_variant(qwen("meta-llama/Llama-3.2-1B", licence="llama3.2"))
    errors = errors_of(spec(variant))
    assert errors["variant"] == (
        "Refused by the licence policy: licence llama3.2 is not in the allowed list."
    )


def test_unknown_fields_are_refused_not_dropped():
    variant = gguf_variant()
    errors = errors_of({**spec(variant), "replica": 3, "strategy": {"max_surges": 2}})
    assert "Unknown field" in errors["replica"]
    assert "Unknown field" in errors["strategy.max_surges"]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"replicas": 65}, "replicas", "less than or equal to 64"),
        ({"replicas": -1}, "replicas", "greater than or equal to 0"),
        ({"port": 80}, "port", "greater than or equal to 1024"),
        ({"resources": {"cpus": 0}}, "resources.cpus", "greater than or equal to 0.1"),
        ({"resources": {"memory_bytes": "lots"}}, "resources.memory_bytes", "8G, 512Mi"),
        ({"placement": {"strategy": "random"}}, "placement.strategy", "not a valid choice"),
        ({"placement": {"selector": {"-bad": "x"}}}, "placement.selector", "not valid"),
        (
            {"strategy": {"max_surge": 0, "max_unavailable": 0}},
            "strategy.max_surge",
            "cannot both be 0",
        ),
        (
            {"strategy": {"min_healthy_seconds": 600, "healthy_deadline_seconds": 300}},
            "strategy.healthy_deadline_seconds",
            "longer than min_healthy_seconds",
        ),
    ],
)
def test_field_errors(overrides, field, message):
    errors = errors_of(spec(gguf_variant(), **overrides))
    assert message in errors[field], errors


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("omp_threads", "4", "upper-case letters"),
        ("1ST", "x", "upper-case letters"),
        ("FLEET_NODE", "x", "belong to the platform"),
        ("HF_TOKEN", "x", "names a secret"),
        ("DB_PASSWORD", "x", "names a secret"),
        ("OPENAI_API_KEY", "x", "names a secret"),
        ("MY_SETTING", "hf_" + "a" * 34, "looks like a credential"),
        ("LLAMA_ARG_CTX_SIZE", "8192", "use runtime arguments instead"),
    ],
)
def test_plain_env_refuses_bad_names_and_secrets(key, value, message):
    errors = errors_of(spec(gguf_variant(), env={key: value}))
    assert message in errors[f"env.{key}"], errors


def test_plain_env_keeps_ordinary_variables():
    normalized = normalize_spec(
        spec(gguf_variant(), env={"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "4"})
    )
    assert normalized["env"] == {"OMP_NUM_THREADS": "4", "TOKENIZERS_PARALLELISM": "false"}


def test_gpus_default_from_the_runtime():
    variant = safetensors_variant()
    assert normalize_spec(spec(variant))["resources"]["gpus"] == 1  # vLLM needs a GPU
    tp = normalize_spec(spec(variant, runtime_args={"tensor_parallel_size": 2}))
    assert tp["resources"]["gpus"] == 2
    gguf = gguf_variant(variant.model)
    offload = normalize_spec(spec(gguf, runtime_args={"gpu_layers": 99}))
    assert offload["resources"]["gpus"] == 1


def test_gpu_counts_that_cannot_work_are_refused():
    variant = safetensors_variant()
    assert (
        "needs at least one GPU"
        in errors_of(spec(variant, resources={"gpus": 0}))["resources.gpus"]
    )
    mismatch = errors_of(
        spec(variant, runtime_args={"tensor_parallel_size": 2}, resources={"gpus": 1})
    )
    assert "tensor_parallel_size = 2" in mismatch["resources.gpus"]


def test_memory_limit_below_the_footprint_is_refused():
    variant = gguf_variant()  # ~1.1 GB at llama.cpp's default 4096 tokens of context
    errors = errors_of(spec(variant, resources={"memory_bytes": "512Mi"}))
    assert "Below the footprint" in errors["resources.memory_bytes"]
    assert "context 4096 (1.1 GB)" in errors["resources.memory_bytes"]
    ok = normalize_spec(spec(variant, resources={"memory_bytes": "2Gi", "cpus": 2}))
    assert ok["resources"] == {"cpus": 2.0, "memory_bytes": 2 * 1024**3, "gpus": 0}


def test_image_override_and_custom_image():
    variant = gguf_variant()
    assert (
        normalize_spec(spec(variant, image="ghcr.io/ggml-org/llama.cpp:server-cuda"))["image"]
        == "ghcr.io/ggml-org/llama.cpp:server-cuda"
    )
    assert "image" in errors_of(spec(variant, image="Not An Image!"))
    args = {"image": "example/server:1", "command": ["serve", "--model", "{model_path}"]}
    custom = {"variant": variant.pk, "runtime": "custom", "runtime_args": args}
    assert normalize_spec(custom)["runtime_args"]["image"] == "example/server:1"
    assert "in runtime_args" in errors_of({**custom, "image": "example/server:2"})["image"]


def test_merge_patch_rules():
    current = {
        "runtime": "llamacpp",
        "runtime_args": {"context_size": 8192, "parallel": 2},
        "resources": {"cpus": 2.0, "memory_bytes": None, "gpus": 0},
        "env": {"A": "1"},
    }
    merged = merge_spec(
        current, {"runtime_args": {"parallel": None, "threads": 4}, "resources": {"cpus": 4}}
    )
    assert merged["runtime_args"] == {"context_size": 8192, "threads": 4}
    assert merged["resources"] == {"cpus": 4, "memory_bytes": None, "gpus": 0}
    assert current["runtime_args"] == {"context_size": 8192, "parallel": 2}, "not mutated"
    switched = merge_spec(current, {"runtime": "ollama"})
    assert switched["runtime_args"] == {}, "another runtime's arguments are dropped"


@pytest.mark.parametrize(
    ("text", "size"),
    [(1024, 1024), ("8G", 8 * 10**9), ("8Gi", 8 * 1024**3), ("512Mi", 512 * 1024**2)],
)
def test_parse_bytes(text, size):
    assert parse_bytes(text) == size
