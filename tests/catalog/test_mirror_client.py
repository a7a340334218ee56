"""The fleet model mirror, judged by the real huggingface_hub client against a live server."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, RepoFile, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get

from models_catalog.models import ModelFile
from tests.hubserver.fixtures import MIRROR_COMMIT, TINY

pytestmark = pytest.mark.django_db(transaction=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def endpoint(live_server) -> str:
    return f"{live_server.url}/hub"


def _same_files(snapshot: Path, model_dir: Path) -> None:
    names = sorted(p.name for p in model_dir.iterdir() if p.is_file())
    assert sorted(p.name for p in snapshot.iterdir()) == names
    for name in names:
        assert (snapshot / name).read_bytes() == (model_dir / name).read_bytes(), name


def test_snapshot_download_with_a_node_credential_is_byte_identical(
    mirror_model, endpoint, node_credential, tiny_model_dir, tmp_path
):
    folder = snapshot_download(
        TINY,
        revision=MIRROR_COMMIT,
        endpoint=endpoint,
        token=node_credential,
        cache_dir=tmp_path / "cache",
    )
    assert Path(folder).name == MIRROR_COMMIT
    _same_files(Path(folder), tiny_model_dir)
    # the cache names blobs by ETag: sha256 for the LFS weights, git blob sha1 for the rest
    blobs = {
        p.name for p in (tmp_path / "cache" / "models--fleet-test--tiny-llama" / "blobs").iterdir()
    }
    weights = ModelFile.objects.get(model=mirror_model, path="model.safetensors")
    config = ModelFile.objects.get(model=mirror_model, path="config.json")
    assert {weights.sha256, config.blob_id} <= blobs


def test_snapshot_download_of_the_branch_name_resolves_to_the_pin(
    mirror_model, endpoint, viewer_api_token, tiny_model_dir, tmp_path
):
    folder = snapshot_download(
        TINY, revision="main", endpoint=endpoint, token=viewer_api_token, cache_dir=tmp_path
    )
    assert Path(folder).name == MIRROR_COMMIT
    _same_files(Path(folder), tiny_model_dir)
    assert (
        tmp_path / "models--fleet-test--tiny-llama" / "refs" / "main"
    ).read_text() == MIRROR_COMMIT


def test_hf_hub_download_with_an_api_token(
    mirror_model, endpoint, viewer_api_token, tiny_model_dir, tmp_path
):
    path = hf_hub_download(
        TINY, "model.safetensors", endpoint=endpoint, token=viewer_api_token, cache_dir=tmp_path
    )
    assert Path(path).read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()


def test_model_info_lists_sizes_and_sha256s(mirror_model, endpoint, node_credential):
    info = HfApi(endpoint=endpoint, token=node_credential).model_info(TINY, files_metadata=True)
    assert info.sha == MIRROR_COMMIT
    assert info.card_data is not None and info.config is not None and info.siblings is not None
    assert info.card_data.license == "apache-2.0"
    assert info.pipeline_tag == "text-generation"
    assert info.config["architectures"] == ["LlamaForCausalLM"]
    rows = {row.path: row for row in mirror_model.files.all()}
    assert {s.rfilename for s in info.siblings} == set(rows)
    for sibling in info.siblings:
        row = rows[sibling.rfilename]
        assert (sibling.size, sibling.blob_id) == (row.size, row.blob_id)
        assert (sibling.lfs is not None) == row.lfs
        if sibling.lfs is not None:
            assert sibling.lfs.sha256 == row.sha256
            assert sibling.lfs.size == row.size
    assert any(s.lfs for s in info.siblings), "the weights travel as an LFS file"


def test_listing_refs_commits_and_paths_info(mirror_model, endpoint, node_credential):
    api = HfApi(endpoint=endpoint, token=node_credential)
    files = {
        f.path: f
        for f in api.list_repo_tree(TINY, recursive=True, revision=MIRROR_COMMIT)
        if isinstance(f, RepoFile)
    }
    assert set(files) == set(mirror_model.files.values_list("path", flat=True))
    lfs = files["model.safetensors"].lfs
    assert lfs is not None and lfs.sha256 == mirror_model.files.get(path="model.safetensors").sha256
    refs = api.list_repo_refs(TINY)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", MIRROR_COMMIT)]
    commits = api.list_repo_commits(TINY, revision="main")
    assert [c.commit_id for c in commits] == [MIRROR_COMMIT]
    info = api.get_paths_info(TINY, ["config.json", "missing.txt"], revision=MIRROR_COMMIT)
    assert [entry.path for entry in info] == ["config.json"]


def test_the_client_follows_tree_pages(mirror_model, endpoint, node_credential, monkeypatch):
    monkeypatch.setattr("models_catalog.mirror.protocol.TREE_PAGE", 2)
    api = HfApi(endpoint=endpoint, token=node_credential)
    pages = list(api._iter_repo_tree_pages(TINY, recursive=True, revision="main"))
    assert len(pages) > 2
    paths = [entry.path for page, _ in pages for entry in page]
    assert sorted(paths) == sorted(mirror_model.files.values_list("path", flat=True))


def test_errors_are_the_hubs_errors(mirror_model, endpoint, node_credential, tmp_path):
    kwargs = {"endpoint": endpoint, "token": node_credential, "cache_dir": tmp_path}
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(TINY, "pytorch_model.bin", **kwargs)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("fleet-test/unknown", "config.json", **kwargs)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(TINY, "config.json", revision="f" * 40, **kwargs)
    with pytest.raises(RevisionNotFoundError):
        HfApi(endpoint=endpoint, token=node_credential).model_info(TINY, revision="dev")


def test_a_file_not_in_the_store_yet_is_entry_not_found(
    mirror_model, endpoint, node_credential, tmp_path, settings
):
    weights = mirror_model.files.get(path="model.safetensors")
    from models_catalog import store

    store.blob_path(weights.sha256).unlink()
    with pytest.raises(EntryNotFoundError, match="not cached in the fleet store yet"):
        hf_hub_download(
            TINY, "model.safetensors", endpoint=endpoint, token=node_credential, cache_dir=tmp_path
        )
    # and the client did not record the file as missing for good
    assert not (tmp_path / "models--fleet-test--tiny-llama" / ".no_exist").exists()


@pytest.mark.parametrize("token", [False, "slmn_not-a-real-credential", "hf_someone_elses_token"])
def test_without_a_valid_credential_the_mirror_refuses(mirror_model, endpoint, tmp_path, token):
    with pytest.raises(HfHubHTTPError) as caught:
        hf_hub_download(TINY, "config.json", endpoint=endpoint, token=token, cache_dir=tmp_path)
    assert caught.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as caught:
        HfApi(endpoint=endpoint, token=token).model_info(TINY)
    assert caught.value.response.status_code == 401
    assert not list(tmp_path.rglob("config.json"))


def test_a_download_resumes_with_a_range_request(
    mirror_model, endpoint, node_credential, tiny_model_dir
):
    """huggingface_hub's own resume path: ``http_get(resume_size=N)`` asks for ``bytes=N-``."""
    original = (tiny_model_dir / "model.safetensors").read_bytes()
    half = len(original) // 2
    partial = io.BytesIO(original[:half])
    partial.seek(half)
    http_get(
        f"{endpoint}/{TINY}/resolve/{MIRROR_COMMIT}/model.safetensors",
        partial,
        resume_size=half,
        headers={"authorization": f"Bearer {node_credential}"},
        expected_size=len(original),
    )
    assert partial.getvalue() == original


def test_range_requests_over_http(mirror_model, endpoint, node_credential, tiny_model_dir):
    original = (tiny_model_dir / "model.safetensors").read_bytes()
    url = f"{endpoint}/{TINY}/resolve/main/model.safetensors"
    auth = {"Authorization": f"Bearer {node_credential}"}
    with httpx2.Client(headers=auth) as client:
        part = client.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206
        assert part.headers["Content-Range"] == f"bytes 100-199/{len(original)}"
        assert part.content == original[100:200]
        tail = client.get(url, headers={"Range": "bytes=-10"})
        assert (tail.status_code, tail.content) == (206, original[-10:])
        beyond = client.get(url, headers={"Range": f"bytes={len(original)}-"})
        assert beyond.status_code == 416
        assert beyond.headers["Content-Range"] == f"bytes */{len(original)}"
        whole = client.get(url)
        assert (whole.status_code, whole.headers["Accept-Ranges"]) == (200, "bytes")
        assert hashlib.sha256(whole.content).hexdigest() == _sha256(
            tiny_model_dir / "model.safetensors"
        )
