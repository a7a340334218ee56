"""The adapter registry, the shared argument schema helper and the image settings."""

from __future__ import annotations

import pytest

from config.env import EnvReader
from deployments.choices import Runtime
from deployments.runtimes import (
    ADAPTERS,
    UnknownRuntimeError,
    adapter_for_variant_format,
    get_adapter,
)
from deployments.runtimes.args import Arg, ArgSchema, clean_env
from deployments.runtimes.base import ArgumentError, RuntimeAdapter
from models_catalog.choices import VariantFormat


def test_one_adapter_per_runtime_choice():
    assert sorted(ADAPTERS) == sorted(Runtime.values)
    for name, adapter in ADAPTERS.items():
        assert isinstance(adapter, RuntimeAdapter)
        assert adapter.name == name
        assert get_adapter(name) is adapter
        assert set(adapter.formats) <= set(VariantFormat.values)


def test_unknown_runtime_is_a_clear_argument_error():
    with pytest.raises(UnknownRuntimeError) as caught:
        get_adapter("tgi")
    assert caught.value.errors == {
        "runtime": "unknown runtime 'tgi'; known: custom, llamacpp, ollama, vllm"
    }
    assert isinstance(caught.value, ArgumentError)
    assert isinstance(caught.value, LookupError)
    with pytest.raises(UnknownRuntimeError):
        get_adapter(None)  # type: ignore[arg-type]


def test_runtimes_for_each_variant_format():
    assert adapter_for_variant_format("gguf") == ["llamacpp", "ollama", "custom"]
    assert adapter_for_variant_format("safetensors") == ["vllm", "custom"]
    assert adapter_for_variant_format("onnx") == ["custom"]
    assert adapter_for_variant_format("pickle") == []


def test_default_images_come_from_settings(settings):
    assert get_adapter("llamacpp").default_image() == "ghcr.io/ggml-org/llama.cpp:server"
    assert get_adapter("vllm").default_image() == "vllm/vllm-openai:latest"
    assert get_adapter("ollama").default_image() == "ollama/ollama:latest"
    settings.FLEET_IMAGE_OLLAMA = ""
    assert get_adapter("ollama").default_image() == "ollama/ollama:latest"


def test_image_settings_read_the_environment():
    reader = EnvReader({"FLEET_IMAGE_VLLM": "registry.internal/vllm-openai:v0.11"})
    assert reader.string("FLEET_IMAGE_VLLM", "vllm/vllm-openai:latest") == (
        "registry.internal/vllm-openai:v0.11"
    )


def test_every_schema_describes_itself():
    for adapter in ADAPTERS.values():
        rows = adapter.schema.describe()  # type: ignore[attr-defined]
        assert rows, adapter.name
        for row in rows:
            assert {"name", "type", "description"} <= set(row)
    llama = {row["name"]: row for row in get_adapter("llamacpp").schema.describe()}  # type: ignore[attr-defined]
    assert llama["context_size"]["flag"] == "-c"
    assert llama["context_size"]["minimum"] == 128
    assert llama["flash_attn"]["choices"] == ["on", "off", "auto"]
    ollama = {row["name"]: row for row in get_adapter("ollama").schema.describe()}  # type: ignore[attr-defined]
    assert "temperature" in {field["name"] for field in ollama["parameters"]["fields"]}


SCHEMA = ArgSchema(
    "demo",
    args=(
        Arg("size", "int", "a size", flag="--size", minimum=1, maximum=10, aliases=("s",)),
        Arg("ratio", "float", "a ratio", flag="--ratio", minimum=0, maximum=1),
        Arg("fast", "bool", "go fast", flag="--fast", negative_flag="--slow"),
        Arg("quiet", "bool", "be quiet", flag="--quiet"),
        Arg("mode", "enum", "a mode", flag="--mode", choices=("a", "b")),
        Arg("tags", "strings", "tags", max_items=2),
    ),
    refused={"root": "never"},
)


def test_schema_cleans_and_renders():
    cleaned = SCHEMA.clean(
        {"--size": "3", "ratio": 1, "fast": "no", "quiet": True, "mode": "B", "tags": "x"}
    )
    assert cleaned == {
        "size": 3,
        "ratio": 1.0,
        "fast": False,
        "quiet": True,
        "mode": "b",
        "tags": ["x"],
    }
    assert SCHEMA.cli(cleaned) == [
        "--size",
        "3",
        "--ratio",
        "1.0",
        "--slow",
        "--quiet",
        "--mode",
        "b",
    ]
    assert SCHEMA.cli({"quiet": False}) == []
    assert SCHEMA.clean(None) == {}
    assert SCHEMA.clean({"size": None}) == {}


@pytest.mark.parametrize(
    ("raw", "errors"),
    [
        ({"size": 11}, {"size": "must be at most 10, got 11"}),
        ({"size": 0}, {"size": "must be at least 1, got 0"}),
        ({"size": float("nan")}, {"size": "must be a whole number"}),
        ({"size": "inf"}, {"size": "must be a whole number, got 'inf'"}),
        ({"size": [1]}, {"size": "must be a whole number"}),
        ({"ratio": "0,5"}, {"ratio": "must be a number, got '0,5'"}),
        ({"mode": "c"}, {"mode": "must be one of: a, b; got 'c'"}),
        ({"tags": ["a", "b", "c"]}, {"tags": "must have at most 2 items"}),
        ({"size": 2, "s": 3}, {"s": "given twice ('size' and 's')"}),
        ({"root": True}, {"root": "refused for demo: never"}),
        ({"": 1}, {"": "argument names are non-empty strings"}),
        (
            {"colour": "red"},
            {
                "colour": "unknown argument 'colour' for demo; known: "
                "size, ratio, fast, quiet, mode, tags"
            },
        ),
    ],
)
def test_schema_errors(raw, errors):
    with pytest.raises(ArgumentError) as caught:
        SCHEMA.clean(raw)
    assert caught.value.errors == errors


def test_schema_refuses_a_non_mapping():
    with pytest.raises(ArgumentError) as caught:
        SCHEMA.clean(["size", 3])  # type: ignore[arg-type]
    assert caught.value.errors == {"args": "must be an object of argument names to values"}


def test_declaring_a_key_twice_is_a_programming_error():
    with pytest.raises(ValueError, match="declared twice"):
        ArgSchema("x", args=(Arg("a", "int", "a"), Arg("b", "int", "b", aliases=("a",))))
    with pytest.raises(ValueError, match="declared twice"):
        ArgSchema("x", args=(Arg("a", "int", "a"),), refused={"a": "no"})


def test_clean_env():
    assert clean_env({"A": "1", "B": 2}, runtime="demo") == {"A": "1", "B": "2"}
    assert clean_env(None, runtime="demo") == {}
    with pytest.raises(ArgumentError) as caught:
        clean_env(
            {"1BAD": "x", "OK": True, "HF_TOKEN": "t", "X_Y": "a" * 5000, "PFX_A": "1"},
            runtime="demo",
            refused_prefixes={"PFX_": "reserved"},
        )
    assert caught.value.errors == {
        "env.1BAD": "variable names are letters, digits and underscores",
        "env.OK": "values are text (or numbers)",
        "env.HF_TOKEN": "refused for demo: no Hugging Face token goes into a container: "
        "models are served from the node's hub cache",
        "env.X_Y": "values are at most 4096 characters, without NUL",
        "env.PFX_A": "refused for demo: reserved",
    }
