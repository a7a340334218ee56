"""pytest fixtures: a real tiny model, a directory of test repositories, a running test hub.

Loaded for the whole suite by ``pytest_plugins`` in tests/conftest.py. Nothing heavy happens
at import: torch and transformers load only when a test first asks for ``tiny_model_dir``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hubserver import tinymodel
from tests.hubserver.repos import add_repo, commits_of
from tests.hubserver.server import run_in_thread

TINY = "fleet-test/tiny-llama"
TINY_GGUF = "fleet-test/tiny-llama-gguf"
GATED = "fleet-test/gated-model"
PRIVATE = "fleet-test/private-model"
BAD = "fleet-test/bad-files"
GATED_TOKEN = "hf_gated_test_token_0123456789"
PRIVATE_TOKEN = "hf_private_test_token_0123456789"
# bad-files: a GET from byte 0 of these files loses its connection after that many bytes.
# huggingface_hub resumes only from multiples of its 10 MiB read size, so big.bin resumes
# (with Range: bytes=10485760-) and model.safetensors restarts from zero every time.
FAIL_AFTER_BYTES = 1_000_000
BIG_SIZE, BIG_FAIL_AFTER = 12 * 1024 * 1024, 11 * 1024 * 1024
GGUF_NAME = "tiny-llama-Q8_0.gguf"
REPOS = (TINY, TINY_GGUF, GATED, PRIVATE, BAD)
MIRROR_COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the tiny model's pin in the catalog

GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.gguf filter=lfs diff=lfs merge=lfs -text\n"
)


def _card(license: str, *extra: str) -> bytes:
    lines = ["---", f"license: {license}", *extra, "---", "# A tiny test model", ""]
    return "\n".join(lines).encode()


def populate(root: Path, model_dir: Path) -> dict[str, list[str]]:
    """Write the test repositories under ``root``; returns their commit shas, oldest first."""
    model_files: dict[str, bytes | Path] = {
        path.name: path for path in sorted(model_dir.iterdir()) if path.is_file()
    }
    config = json.loads((model_dir / "config.json").read_text())
    longer = {**config, "max_position_embeddings": config["max_position_embeddings"] * 2}
    card = _card("apache-2.0", "pipeline_tag: text-generation", "tags:", "- tiny", "- test")
    first = {**model_files, ".gitattributes": GITATTRIBUTES, "README.md": card}
    second = {**first, "config.json": json.dumps(longer, indent=2).encode()}
    gguf = tinymodel.write_tiny_gguf(root / GGUF_NAME)
    small: dict[str, bytes | Path] = {
        "config.json": model_dir / "config.json",
        "README.md": _card("other"),
    }
    noise = os.urandom(64 * 1024)
    commits = {
        TINY: add_repo(root, TINY, [first, second], meta={"downloads": 1234, "likes": 7}),
        TINY_GGUF: add_repo(
            root,
            TINY_GGUF,
            [{GGUF_NAME: gguf, "README.md": _card("mit", f"base_model: {TINY}")}],
            meta={"downloads": 99, "likes": 1},
        ),
        GATED: add_repo(
            root,
            GATED,
            [{**small, "model.safetensors": model_dir / "model.safetensors"}],
            gated={"tokens": [GATED_TOKEN]},
            meta={"downloads": 10},
        ),
        PRIVATE: add_repo(root, PRIVATE, [small], private={"tokens": [PRIVATE_TOKEN]}),
        BAD: add_repo(
            root,
            BAD,
            [
                {
                    "config.json": model_dir / "config.json",
                    "model.safetensors": model_dir / "model.safetensors",
                    "corrupt.bin": noise,
                    "big.bin": os.urandom(BIG_SIZE),
                }
            ],
            faults={
                "corrupt": ["corrupt.bin"],
                "fail_after_bytes": {
                    "model.safetensors": FAIL_AFTER_BYTES,
                    "big.bin": BIG_FAIL_AFTER,
                },
                "extra_siblings": ["../escape.txt", "/etc/passwd"],
            },
        ),
    }
    gguf.unlink()
    return commits


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A real tiny LlamaForCausalLM (safetensors) + SentencePiece tokenizer, cached on disk."""
    return tinymodel.tiny_llama()


@pytest.fixture(scope="session")
def hub_root(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A directory of test repositories: tiny-llama (two commits, main = the second),
    tiny-llama-gguf, gated-model, private-model and bad-files (faults)."""
    root = tmp_path_factory.mktemp("hub")
    populate(root, tiny_model_dir)
    return root


@pytest.fixture(scope="session")
def hub_commits(hub_root: Path) -> dict[str, list[str]]:
    """``{repo_id: [commit sha, ...]}``, oldest first, of the repositories in ``hub_root``."""
    return {repo: commits_of(hub_root, repo) for repo in REPOS}


@pytest.fixture(scope="session")
def upstream_hub(hub_root: Path) -> Iterator[str]:
    """The test hub serving ``hub_root``; its base URL (``endpoint=`` for huggingface_hub)."""
    url, stop = run_in_thread(hub_root)
    yield url
    stop()


# --- The fleet side: the tiny model in the catalog and the store, credentials -----------------
@pytest.fixture
def fleet_store(settings: Any, tmp_path: Path) -> Path:
    """An empty content-addressed store for this test (``settings.FLEET_MODEL_STORE``)."""
    settings.FLEET_MODEL_STORE = tmp_path / "store"
    return Path(settings.FLEET_MODEL_STORE)


def catalog_tiny_model(
    model_dir: Path, commit_sha: str, *, ingest: bool = True, repo_id: str = TINY
) -> Any:
    """A CatalogModel for the tiny model with real ModelFile rows, its files in the store."""
    from models_catalog import store
    from models_catalog.mirror import protocol
    from models_catalog.models import CatalogModel, ModelFile

    config = json.loads((model_dir / "config.json").read_text())
    model = CatalogModel.objects.create(
        repo_id=repo_id,
        commit_sha=commit_sha,
        requested_revision="main",
        architecture="LlamaForCausalLM",
        model_type="llama",
        config=config,
        licence="apache-2.0",
        task="text-generation",
        library="transformers",
    )
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        size, sha256, blob_id = protocol.file_digests(path)
        lfs = protocol.is_lfs(path.name, size)
        ModelFile.objects.create(
            model=model, path=path.name, size=size, sha256=sha256, blob_id=blob_id, lfs=lfs
        )
        if ingest:
            incoming = store.incoming_dir() / f"{sha256}.part"
            shutil.copyfile(path, incoming)
            store.ingest_file(incoming, expected_sha256=sha256, expected_size=size)
    model.total_size = sum(model.files.values_list("size", flat=True))
    model.save(update_fields=["total_size"])
    return model


@pytest.fixture
def mirror_model(db: None, fleet_store: Path, tiny_model_dir: Path) -> Any:
    """``fleet-test/tiny-llama`` in the catalog (pinned to a fixed commit), every file stored."""
    return catalog_tiny_model(tiny_model_dir, MIRROR_COMMIT)


@pytest.fixture
def node_credential(db: None) -> str:
    """A real node credential (``slmn_…``), from a join token and a join."""
    from core.history import ChangeContext
    from fleet import services

    _, key = services.create_join_token(ChangeContext.system("tests"), name="mirror test")
    _, credential = services.join_node(join_key=key, name="mirror-node")
    return credential


@pytest.fixture
def viewer_api_token(viewer_user: Any, token_for: Any) -> str:
    """A read-scoped personal API token (``slmf_…``) of a viewer."""
    from core.choices import TokenScope

    return str(token_for(viewer_user, scope=TokenScope.READ, name="mirror"))
