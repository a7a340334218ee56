"""The mirror's HTTP answers: headers, X-Accel-Redirect, method and path checks."""

from __future__ import annotations

import pytest
from django.test import Client

from models_catalog import store
from models_catalog.models import ModelFile
from tests.hubserver.fixtures import MIRROR_COMMIT, TINY

pytestmark = pytest.mark.django_db

RESOLVE = f"/hub/{TINY}/resolve"


@pytest.fixture
def client(node_credential) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {node_credential}")


def _weights(model) -> ModelFile:
    return model.files.get(path="model.safetensors")


def test_head_answers_the_metadata_huggingface_hub_reads(mirror_model, client):
    weights = _weights(mirror_model)
    response = client.head(f"{RESOLVE}/main/model.safetensors")
    assert response.status_code == 200
    assert response["X-Repo-Commit"] == MIRROR_COMMIT
    assert response["ETag"] == f'"{weights.sha256}"'
    assert response["X-Linked-Etag"] == f'"{weights.sha256}"'
    assert response["Content-Length"] == str(weights.size)
    assert response["Accept-Ranges"] == "bytes"
    assert response.content == b""
    config = mirror_model.files.get(path="config.json")
    head = client.head(f"{RESOLVE}/{MIRROR_COMMIT}/config.json")
    assert head["ETag"] == f'"{config.blob_id}"', "a non-LFS file's ETag is its git blob sha1"
    assert "X-Linked-Etag" not in head


def test_accel_redirect_hands_the_bytes_to_nginx(mirror_model, client, settings):
    settings.FLEET_MIRROR_ACCEL_REDIRECT = "/_store/"
    weights = _weights(mirror_model)
    response = client.get(f"{RESOLVE}/main/model.safetensors", HTTP_RANGE="bytes=0-9")
    assert response.status_code == 200
    sha = weights.sha256
    assert response["X-Accel-Redirect"] == f"/_store/blobs/sha256/{sha[:2]}/{sha}"
    assert response.content == b""
    assert response["X-Repo-Commit"] == MIRROR_COMMIT
    assert response["ETag"] == f'"{sha}"'
    assert store.blob_path(sha).is_file()
    head = client.head(f"{RESOLVE}/main/model.safetensors")
    assert head["Content-Length"] == str(weights.size)
    assert "X-Accel-Redirect" not in head
    settings.FLEET_MIRROR_ACCEL_REDIRECT = "/_store"  # without the trailing slash
    again = client.get(f"{RESOLVE}/main/model.safetensors")
    assert again["X-Accel-Redirect"] == f"/_store/blobs/sha256/{sha[:2]}/{sha}"


def test_if_range_for_another_version_sends_the_whole_file(mirror_model, client):
    weights = _weights(mirror_model)
    stale = client.get(
        f"{RESOLVE}/main/model.safetensors", HTTP_RANGE="bytes=10-", HTTP_IF_RANGE='"other"'
    )
    assert stale.status_code == 200
    assert int(stale["Content-Length"]) == weights.size
    fresh = client.get(
        f"{RESOLVE}/main/model.safetensors",
        HTTP_RANGE="bytes=10-",
        HTTP_IF_RANGE=f'"{weights.sha256}"',
    )
    assert fresh.status_code == 206
    assert len(b"".join(fresh.streaming_content)) == weights.size - 10


@pytest.mark.parametrize(
    "path",
    [
        "main/../../../../etc/passwd",
        "main/%2e%2e/%2e%2e/etc/passwd",
        "main/..%2f..%2fetc%2fpasswd",
        "main//etc/passwd",
        "main/config.json%00.txt",
        "main/sub/./config.json",
        "main/..",
        "main/a\\..\\b",
    ],
)
def test_path_traversal_is_refused(mirror_model, client, path):
    response = client.get(f"{RESOLVE}/{path}")
    assert response.status_code in (400, 404), response.status_code
    assert b"root:" not in response.content
    assert response.get("Content-Type", "").startswith("application/json")


def test_a_hostile_catalog_row_never_reaches_outside_the_store(mirror_model, client):
    """A row whose path or sha256 is hostile: nothing is read from a path built from either."""
    ModelFile.objects.create(model=mirror_model, path="../secret.txt", size=6, sha256="x" * 64)
    ModelFile.objects.create(
        model=mirror_model, path="evil.bin", size=6, sha256="../" * 8 + "etc/passwd", lfs=True
    )
    assert client.get(f"{RESOLVE}/main/../secret.txt").status_code == 400
    response = client.get(f"{RESOLVE}/main/evil.bin")
    assert response.status_code == 404
    assert response["X-Error-Code"] == "EntryNotFound"


@pytest.mark.parametrize(
    "url",
    [
        f"/hub/api/models/{TINY}",
        f"/hub/api/models/{TINY}/tree/main",
        f"/hub/api/models/{TINY}/refs",
        f"{RESOLVE}/main/config.json",
        "/hub/anything/else",
    ],
)
@pytest.mark.parametrize("method", ["get", "post", "head"])
def test_every_route_refuses_without_a_credential(mirror_model, url, method):
    response = getattr(Client(), method)(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    if method != "head":
        assert "credential" in response.json()["error"]


def test_a_session_is_not_a_credential(mirror_model, admin_user):
    client = Client()
    client.force_login(admin_user)
    assert client.get(f"{RESOLVE}/main/config.json").status_code == 401


def test_a_deleted_node_loses_access(mirror_model, node_credential):
    from fleet.models import Node

    client = Client(HTTP_AUTHORIZATION=f"Bearer {node_credential}")
    assert client.head(f"{RESOLVE}/main/config.json").status_code == 200
    Node.objects.all().delete()
    assert client.head(f"{RESOLVE}/main/config.json").status_code == 401


def test_methods_other_than_read_are_refused(mirror_model, client):
    assert client.post(f"{RESOLVE}/main/config.json").status_code == 405
    assert client.delete(f"/hub/api/models/{TINY}").status_code == 405
    assert client.get(f"/hub/api/models/{TINY}/paths-info/main").status_code == 405


def test_errors_carry_the_hub_error_code_and_a_json_body(mirror_model, client):
    missing = client.get(f"{RESOLVE}/main/nope.txt")
    assert (missing.status_code, missing["X-Error-Code"]) == (404, "EntryNotFound")
    assert missing["X-Repo-Commit"] == MIRROR_COMMIT
    assert "nope.txt" in missing.json()["error"]
    repo = client.get("/hub/api/models/fleet-test/nothing-here")
    assert (repo.status_code, repo["X-Error-Code"]) == (404, "RepoNotFound")
    revision = client.get(f"/hub/api/models/{TINY}/revision/v2")
    assert (revision.status_code, revision["X-Error-Code"]) == (404, "RevisionNotFound")
    tree = client.get(f"/hub/api/models/{TINY}/tree/main/no-such-dir")
    assert (tree.status_code, tree["X-Error-Code"]) == (404, "EntryNotFound")
