"""The test upstream hub (tests/hubserver), judged by the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import safe_open

from tests.hubserver.fixtures import (
    BAD,
    BIG_SIZE,
    FAIL_AFTER_BYTES,
    GATED,
    GATED_TOKEN,
    GGUF_NAME,
    PRIVATE,
    PRIVATE_TOKEN,
    TINY,
    TINY_GGUF,
)
from tests.hubserver.server import HubApp, run_in_thread


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_snapshot_download_of_main_and_of_the_first_commit(
    upstream_hub, hub_commits, tiny_model_dir, tmp_path
):
    first, second = hub_commits[TINY]
    main = Path(snapshot_download(TINY, endpoint=upstream_hub, token=False, cache_dir=tmp_path))
    assert main.name == second
    assert (main / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()
    old = Path(
        snapshot_download(
            TINY, revision=first, endpoint=upstream_hub, token=False, cache_dir=tmp_path
        )
    )
    assert old.name == first
    old_config = json.loads((old / "config.json").read_text())
    new_config = json.loads((main / "config.json").read_text())
    assert old_config == json.loads((tiny_model_dir / "config.json").read_text())
    assert new_config["max_position_embeddings"] == 2 * old_config["max_position_embeddings"]
    # the weights are shared between the commits: one blob in the cache
    blobs = list((tmp_path / "models--fleet-test--tiny-llama" / "blobs").iterdir())
    assert sum(1 for blob in blobs if blob.name == _sha256(main / "model.safetensors")) == 1


def test_hf_hub_download_and_the_etags(upstream_hub, tiny_model_dir, tmp_path):
    path = hf_hub_download(
        TINY, "config.json", revision="main", endpoint=upstream_hub, token=False, cache_dir=tmp_path
    )
    config = Path(path).read_bytes()
    blob_sha1 = hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()  # noqa: S324
    assert Path(path).resolve().name == blob_sha1
    weights = hf_hub_download(
        TINY, "model.safetensors", endpoint=upstream_hub, token=False, cache_dir=tmp_path
    )
    assert Path(weights).resolve().name == _sha256(tiny_model_dir / "model.safetensors")


def test_model_info_reports_what_the_hub_derives(upstream_hub, hub_commits, tiny_model_dir):
    api = HfApi(endpoint=upstream_hub, token=False)
    info = api.model_info(TINY, files_metadata=True)
    assert info.sha == hub_commits[TINY][-1]
    assert info.card_data is not None and info.siblings is not None
    assert info.card_data.license == "apache-2.0"
    assert (info.pipeline_tag, info.library_name, info.gated, info.private) == (
        "text-generation",
        "transformers",
        False,
        False,
    )
    assert info.config == {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    with safe_open(tiny_model_dir / "model.safetensors", "np") as weights:
        count = sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())  # noqa: SIM118
    assert info.safetensors is not None
    assert info.safetensors.total == count
    assert info.safetensors.parameters == {"F32": count}
    siblings = {s.rfilename: s for s in info.siblings}
    lfs = siblings["model.safetensors"].lfs
    assert lfs is not None
    assert lfs.sha256 == _sha256(tiny_model_dir / "model.safetensors")
    assert lfs.pointer_size > 100
    assert siblings["config.json"].lfs is None
    assert info.downloads == 1234

    gguf = api.model_info(TINY_GGUF, files_metadata=True)
    assert gguf.gguf == {"total": 64 + 128 * 64, "architecture": "llama", "context_length": 256}
    assert gguf.library_name == "gguf" and gguf.siblings is not None
    assert [s.rfilename for s in gguf.siblings if s.lfs] == [GGUF_NAME]


def test_search_sorts_and_filters(upstream_hub):
    api = HfApi(endpoint=upstream_hub, token=False)
    # other tests add repositories to the shared hub: look at the fixture ones only
    found = list(api.list_models(search="tiny", sort="downloads", limit=100))
    assert all("tiny" in m.id for m in found)
    assert [m.id for m in found if m.id in (TINY, TINY_GGUF)] == [TINY, TINY_GGUF]
    downloads = [m.downloads or 0 for m in found]
    assert downloads == sorted(downloads, reverse=True)
    assert all(m.last_modified is not None for m in found)
    gguf = list(api.list_models(filter="gguf"))
    assert TINY_GGUF in [m.id for m in gguf] and TINY not in [m.id for m in gguf]
    assert len(list(api.list_models(search="tiny", limit=1))) == 1
    everything = [m.id for m in api.list_models(sort="downloads")]
    assert PRIVATE not in everything and GATED in everything
    assert PRIVATE in [
        m.id for m in HfApi(endpoint=upstream_hub, token=PRIVATE_TOKEN).list_models()
    ]
    raw = httpx2.get(f"{upstream_hub}/api/models", params={"search": "tiny-llama-gguf"}).json()
    assert set(raw[0]) >= {
        "id",
        "downloads",
        "likes",
        "pipeline_tag",
        "library_name",
        "tags",
        "lastModified",
    }


def test_not_found_errors(upstream_hub, tmp_path):
    kwargs = {"endpoint": upstream_hub, "token": False, "cache_dir": tmp_path}
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(TINY, "nope.json", **kwargs)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("fleet-test/absent", "config.json", **kwargs)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(TINY, "config.json", revision="no-such-branch", **kwargs)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(TINY, revision="no-such-branch", **kwargs)


def test_gated_repositories_need_an_allowed_token(upstream_hub, tmp_path):
    api = HfApi(endpoint=upstream_hub, token=False)
    assert api.model_info(GATED).gated == "manual"  # the card is public, the files are not
    with pytest.raises(GatedRepoError) as anonymous:
        hf_hub_download(
            GATED, "config.json", endpoint=upstream_hub, token=False, cache_dir=tmp_path
        )
    assert anonymous.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as stranger:
        hf_hub_download(
            GATED, "config.json", endpoint=upstream_hub, token="hf_other", cache_dir=tmp_path
        )
    assert stranger.value.response.status_code == 403
    path = hf_hub_download(
        GATED, "config.json", endpoint=upstream_hub, token=GATED_TOKEN, cache_dir=tmp_path
    )
    assert json.loads(Path(path).read_text())["model_type"] == "llama"


def test_private_repositories_exist_only_for_their_token(upstream_hub, tmp_path):
    for token in (False, "hf_other"):
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=upstream_hub, token=token).model_info(PRIVATE)
    assert HfApi(endpoint=upstream_hub, token=PRIVATE_TOKEN).model_info(PRIVATE).private is True
    folder = snapshot_download(
        PRIVATE, endpoint=upstream_hub, token=PRIVATE_TOKEN, cache_dir=tmp_path
    )
    assert (Path(folder) / "config.json").is_file()


def test_range_requests(upstream_hub, tiny_model_dir):
    original = (tiny_model_dir / "model.safetensors").read_bytes()
    url = f"{upstream_hub}/{TINY}/resolve/main/model.safetensors"
    part = httpx2.get(url, headers={"Range": "bytes=10-19"})
    assert (part.status_code, part.content) == (206, original[10:20])
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(original)}"
    assert httpx2.get(url, headers={"Range": f"bytes={len(original) + 5}-"}).status_code == 416
    head = httpx2.head(url)
    assert head.headers["Content-Length"] == str(len(original))
    assert head.headers["X-Repo-Commit"]


def test_a_dropped_connection_is_resumed_with_a_range(hub_root, tmp_path):
    app = HubApp(hub_root)
    url, stop = run_in_thread(hub_root, app=app)
    try:
        path = hf_hub_download(BAD, "big.bin", endpoint=url, token=False, cache_dir=tmp_path)
    finally:
        stop()
    assert Path(path).stat().st_size == BIG_SIZE
    assert Path(path).resolve().name == _sha256(Path(path)), "the resumed bytes are the file"
    gets = [rng for method, p, rng in app.log if method == "GET" and p.endswith("big.bin")]
    assert gets == [None, f"bytes={10 * 1024 * 1024}-"]


def test_a_cut_transfer_completes_with_a_range_request(upstream_hub, tiny_model_dir):
    original = (tiny_model_dir / "model.safetensors").read_bytes()
    url = f"{upstream_hub}/{BAD}/resolve/main/model.safetensors"
    received = bytearray()
    with pytest.raises(httpx2.RemoteProtocolError), httpx2.stream("GET", url) as response:
        for chunk in response.iter_raw():
            received += chunk
    assert len(received) == FAIL_AFTER_BYTES
    rest = httpx2.get(url, headers={"Range": f"bytes={len(received)}-"})
    assert rest.status_code == 206
    assert bytes(received) + rest.content == original


def test_corrupt_bytes_and_hostile_listings(upstream_hub, tmp_path):
    api = HfApi(endpoint=upstream_hub, token=False)
    info = api.model_info(BAD, files_metadata=True)
    assert info.siblings is not None
    listed = {s.rfilename: s for s in info.siblings}
    assert {"../escape.txt", "/etc/passwd"} <= set(listed)
    path = hf_hub_download(
        BAD, "corrupt.bin", endpoint=upstream_hub, token=False, cache_dir=tmp_path
    )
    actual = _sha256(Path(path))
    assert Path(path).resolve().name != actual, "the bytes differ from what the listing promised"
    assert listed["corrupt.bin"].size == Path(path).stat().st_size
    with pytest.raises(ValueError):
        hf_hub_download(
            BAD, "../escape.txt", endpoint=upstream_hub, token=False, cache_dir=tmp_path
        )
    tree = [f.path for f in api.list_repo_tree(BAD, recursive=True)]
    assert "/etc/passwd" in tree
