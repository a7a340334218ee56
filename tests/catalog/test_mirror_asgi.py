"""The mirror behind the production ASGI stack (config.asgi on uvicorn), streaming big files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from django.http import StreamingHttpResponse
from django.test import AsyncRequestFactory
from huggingface_hub import hf_hub_download, snapshot_download

from models_catalog import store
from models_catalog.mirror import views
from models_catalog.models import ModelFile
from tests.hubserver.fixtures import MIRROR_COMMIT, TINY
from tests.hubserver.server import serve_in_thread

pytestmark = pytest.mark.django_db(transaction=True)

BIG = 48 * 1024 * 1024 + 123  # spans many chunks, not a multiple of the chunk size


@pytest.fixture
def asgi_url() -> Iterator[str]:
    from config.asgi import application

    url, stop = serve_in_thread(application)
    yield f"{url}/hub"
    stop()


@pytest.fixture
def big_file(mirror_model, tmp_path) -> tuple[str, bytes]:
    data = os.urandom(BIG)
    sha256 = hashlib.sha256(data).hexdigest()
    incoming = tmp_path / "big.part"
    incoming.write_bytes(data)
    store.ingest_file(incoming, expected_sha256=sha256, expected_size=BIG)
    ModelFile.objects.create(
        model=mirror_model, path="big/weights.gguf", size=BIG, sha256=sha256, lfs=True
    )
    return "big/weights.gguf", data


def test_snapshot_download_through_uvicorn(
    mirror_model, asgi_url, node_credential, tiny_model_dir, tmp_path
):
    folder = Path(
        snapshot_download(TINY, endpoint=asgi_url, token=node_credential, cache_dir=tmp_path)
    )
    assert folder.name == MIRROR_COMMIT
    for path in tiny_model_dir.iterdir():
        assert (folder / path.name).read_bytes() == path.read_bytes()


def test_a_big_file_streams_whole_and_in_ranges(big_file, asgi_url, node_credential, tmp_path):
    path, data = big_file
    downloaded = hf_hub_download(
        TINY, path, endpoint=asgi_url, token=node_credential, cache_dir=tmp_path
    )
    assert hashlib.sha256(Path(downloaded).read_bytes()).digest() == hashlib.sha256(data).digest()
    url = f"{asgi_url}/{TINY}/resolve/main/{path}"
    with httpx2.Client(headers={"Authorization": f"Bearer {node_credential}"}) as client:
        middle = client.get(url, headers={"Range": "bytes=1048570-3145730"})
        assert middle.status_code == 206
        assert middle.content == data[1048570:3145731]
        assert client.get(url, headers={"Range": f"bytes={BIG}-"}).status_code == 416
        head = client.head(url)
        assert (head.status_code, head.headers["Content-Length"]) == (200, str(BIG))
        assert head.content == b""


def test_under_asgi_the_body_is_an_async_stream(mirror_model, node_credential):
    """Django reads a sync iterator into memory whole under ASGI; the mirror must not."""
    request = AsyncRequestFactory().get(
        f"/hub/{TINY}/resolve/main/model.safetensors",
        headers={"Authorization": f"Bearer {node_credential}"},
    )
    response = views.resolve(
        request, org="fleet-test", name="tiny-llama", rest="main/model.safetensors"
    )
    assert isinstance(response, StreamingHttpResponse)
    assert response.status_code == 200
    assert response.is_async
