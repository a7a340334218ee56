"""Importing from the test hub with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from core import services as core_services
from core.choices import SecretKind
from core.errors import ConflictError, ServiceError
from core.models import HistoryEvent
from models_catalog import hub as hub_module
from models_catalog import services
from models_catalog.models import CatalogModel, ModelFile
from tests.hubserver.fixtures import (
    BAD,
    GATED,
    GATED_TOKEN,
    GGUF_NAME,
    PRIVATE,
    PRIVATE_TOKEN,
    TINY,
    TINY_GGUF,
)

pytestmark = pytest.mark.django_db


def _store_token(name: str, value: str, admin) -> None:
    from core.history import ChangeContext

    core_services.create_secret(
        ChangeContext.for_user(admin), name=name, value=value, kind=SecretKind.HUGGINGFACE_TOKEN
    )


def test_import_records_facts_files_variants_and_history(hub, ctx, hub_commits, tiny_model_dir):
    model = services.import_model(ctx, repo_id=TINY)

    assert model.commit_sha == hub_commits[TINY][-1]  # main = the newest commit
    assert model.requested_revision == "main"
    assert model.architecture == "LlamaForCausalLM"
    assert model.licence == "apache-2.0"
    assert model.task == "text-generation"
    assert not model.gated and not model.private
    assert "tiny" in model.tags
    # parameter count from the safetensors metadata
    assert model.parameter_source == "safetensors"
    assert model.parameter_count == 541312
    assert model.size_tier == "tiny"
    assert model.num_layers == 2 and model.num_kv_heads and model.head_dim
    # every file has its sha256, including the non-LFS ones hashed during the import
    files = {f.path: f for f in model.files.all()}
    # (config.json differs on main: its max context was doubled in the second commit)
    for name in (
        "generation_config.json",
        "tokenizer.json",
        "tokenizer.model",
        "model.safetensors",
    ):
        local = tiny_model_dir / name
        assert files[name].sha256 == hashlib.sha256(local.read_bytes()).hexdigest(), name
        assert files[name].size == local.stat().st_size
    assert files["model.safetensors"].lfs and not files["config.json"].lfs
    assert files["config.json"].blob_id
    assert model.total_size == sum(f.size for f in files.values())
    # one variant: the original weights with config and tokenizer
    (variant,) = model.variants.all()
    assert variant.name == "original" and variant.format == "safetensors"
    assert variant.quantization == "F32"
    assert variant.produced_by == {"source": "upstream"}
    paths = set(variant.files.values_list("path", flat=True))
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= paths
    assert "README.md" not in paths
    # F32 safetensors: 32 bits per weight, measured from the file size
    assert variant.bits_per_weight == pytest.approx(32, abs=0.5)
    event = HistoryEvent.objects.get(verb="imported", target_id=str(model.pk))
    assert event.actor_name == "oscar" and event.reason == "testing the catalog"
    assert event.changes["commit_sha"]["after"] == model.commit_sha
    assert event.changes["variants"]["after"] == ["original"]


def test_import_pins_the_commit_of_a_named_revision(hub, ctx, hub_commits, tiny_model_dir):
    first = hub_commits[TINY][0]
    model = services.import_model(ctx, repo_id=TINY, revision=first)
    assert model.commit_sha == first
    assert model.requested_revision == first
    config = model.files.get(path="config.json")
    local = (tiny_model_dir / "config.json").read_bytes()
    assert config.sha256 == hashlib.sha256(local).hexdigest()
    assert model.max_context == json.loads(local)["max_position_embeddings"]


def test_gguf_repository_variants_quantization_and_gguf_parameter_count(hub, ctx):
    model = services.import_model(ctx, repo_id=TINY_GGUF)
    assert model.licence == "mit"
    assert model.parameter_source == "gguf"
    assert model.parameter_count and model.parameter_count > 0
    # no config.json: the architecture facts come from the GGUF header
    assert model.num_layers == 2 and model.head_dim == 16 and model.max_context == 256
    (variant,) = model.variants.all()
    assert variant.format == "gguf"
    assert variant.name == GGUF_NAME.removesuffix(".gguf")
    assert variant.quantization == "Q8_0"
    gguf_file = ModelFile.objects.get(model=model, path=GGUF_NAME)
    assert variant.bits_per_weight == pytest.approx(
        gguf_file.size * 8 / model.parameter_count, 0.01
    )
    assert list(variant.files.values_list("path", flat=True)) == [GGUF_NAME]


def test_gated_repository_without_a_token_says_what_to_do(hub, ctx):
    with pytest.raises(hub_module.HubError) as caught:
        services.import_model(ctx, repo_id=GATED)
    assert caught.value.code == "gated"
    assert not caught.value.retryable
    assert caught.value.message == (
        f"{GATED} is gated: accept its licence on huggingface.co and store a token with access "
        "as a secret, then import with that secret"
    )
    assert not CatalogModel.objects.exists()


def test_gated_repository_with_a_stored_token_imports(hub, ctx, admin_user):
    _store_token("hf-gated", GATED_TOKEN, admin_user)
    model = services.import_model(ctx, repo_id=GATED, secret_name="hf-gated")
    assert model.gated and model.secret_name == "hf-gated"
    assert model.files.filter(path="model.safetensors").exists()


def test_private_repository_needs_a_token_with_access(hub, ctx, admin_user):
    with pytest.raises(hub_module.HubError) as caught:
        services.import_model(ctx, repo_id=PRIVATE)
    assert caught.value.code == "repo_not_found"
    assert "private" in caught.value.message and "no token was given" in caught.value.message
    _store_token("hf-wrong", GATED_TOKEN, admin_user)
    with pytest.raises(hub_module.HubError) as caught:
        services.import_model(ctx, repo_id=PRIVATE, secret_name="hf-wrong")
    assert "the token given has no access" in caught.value.message
    _store_token("hf-private", PRIVATE_TOKEN, admin_user)
    model = services.import_model(ctx, repo_id=PRIVATE, secret_name="hf-private")
    assert model.private


def test_unknown_secret_repo_and_revision(hub, ctx):
    with pytest.raises(ServiceError) as caught:
        services.import_model(ctx, repo_id=TINY, secret_name="nope")
    assert caught.value.field == "secret_name"
    with pytest.raises(hub_module.HubError) as missing:
        services.import_model(ctx, repo_id="fleet-test/does-not-exist")
    assert missing.value.code == "repo_not_found" and missing.value.status_code == 400
    with pytest.raises(hub_module.HubError) as revision:
        services.import_model(ctx, repo_id=TINY, revision="no-such-branch")
    assert revision.value.code == "revision_not_found"
    assert "no-such-branch" in revision.value.message
    with pytest.raises(ServiceError) as bad:
        services.import_model(ctx, repo_id="not a repo")
    assert bad.value.field == "repo_id"


def test_importing_twice_is_a_conflict(hub, ctx):
    services.import_model(ctx, repo_id=TINY)
    with pytest.raises(ConflictError):
        services.import_model(ctx, repo_id=TINY)


def test_unsafe_paths_in_a_listing_never_enter_the_catalog(hub, ctx):
    model = services.import_model(ctx, repo_id=BAD)
    paths = set(model.files.values_list("path", flat=True))
    assert {"config.json", "corrupt.bin", "model.safetensors"} <= paths
    assert not paths & {"../escape.txt", "/etc/passwd"}
    assert all(hub_module.safe_path(p) for p in paths)
    event = HistoryEvent.objects.get(verb="imported", target_id=str(model.pk))
    assert event.changes["ignored_paths"]["after"] == ["../escape.txt", "/etc/passwd"]


def test_an_unreachable_hub_is_a_retryable_error(settings, ctx, tmp_path: Path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.FLEET_HF_ENDPOINT = f"http://127.0.0.1:{port}"
    with pytest.raises(hub_module.HubError) as caught:
        services.import_model(ctx, repo_id=TINY)
    assert caught.value.retryable and caught.value.code == "unavailable"
    assert caught.value.status_code == 502


def test_download_resumes_a_partial_file_with_a_range_request(
    hub, tmp_path, hub_commits, tiny_model_dir
):
    commit = hub_commits[TINY][-1]
    source = (tiny_model_dir / "model.safetensors").read_bytes()
    partial = tmp_path / "model.safetensors.incomplete"
    partial.write_bytes(source[:1000])
    seen: list[tuple[int, int | None]] = []
    path = hub_module.download(
        TINY,
        commit,
        "model.safetensors",
        tmp_path,
        lambda done, total: seen.append((done, total)),
        expected_size=len(source),
    )
    assert path.read_bytes() == source
    assert not partial.exists()
    assert seen[-1] == (len(source), len(source))
    assert seen[0][0] > 1000  # it went on from byte 1000


@pytest.mark.parametrize("value", ["hf_tok\nen", "hf_tøken", "hf tok", "hf_tok\x00"])
def test_a_secret_that_cannot_be_a_token_is_a_400_naming_the_secret(hub, ctx, admin_user, value):
    from core.history import ChangeContext

    core_services.create_secret(ChangeContext.for_user(admin_user), name="odd", value=value)
    with pytest.raises(ServiceError) as caught:
        services.import_model(ctx, repo_id=TINY_GGUF, secret_name="odd")
    assert caught.value.field == "secret_name"
    assert "odd" in caught.value.message and "printable ASCII" in caught.value.message
    assert not CatalogModel.objects.filter(repo_id=TINY_GGUF).exists()


def test_a_huggingface_token_secret_must_look_like_a_token(admin_user):
    from core.history import ChangeContext

    with pytest.raises(ServiceError) as caught:
        _store_token("hf-odd", "hf_tok en", admin_user)
    assert caught.value.field == "value" and "printable ASCII" in caught.value.message
    assert caught.value.message.count("hf_tok") == 0  # the value is never echoed
    core_services.create_secret(
        ChangeContext.for_user(admin_user), name="generic-odd", value="any thing\n"
    )


@pytest.mark.parametrize("revision", ["7R\u00f9\x03", "ma in", "a..b", "v1^", "x" * 256, "/main"])
def test_a_revision_git_would_refuse_is_a_400_before_the_hub_is_asked(hub, ctx, revision):
    with pytest.raises(ServiceError) as caught:
        services.import_model(ctx, repo_id=TINY_GGUF, revision=revision)
    assert caught.value.field == "revision" and "branch, tag or commit" in caught.value.message
    assert not CatalogModel.objects.filter(repo_id=TINY_GGUF).exists()


@pytest.mark.parametrize("revision", ["main", "refs/pr/1", "v1.0-rc.2", "a" * 40])
def test_ordinary_revisions_are_asked_for(revision):
    assert services._revision(revision, "revision") == revision
