"""The catalog API as clients use it: import, list with filters, detail, resync, repin,
variants with footprints and fits-on, search, the licence policy; errors in the house shape."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.models import HistoryEvent
from fleet.choices import NodeState
from fleet.models import Node
from models_catalog.models import CatalogModel
from tests.hubserver.fixtures import GATED, TINY, TINY_GGUF

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(api_client_for):
    return api_client_for("operator")


@pytest.fixture
def viewer(api_client_for):
    return api_client_for("viewer")


def _import(client, repo_id: str, **extra) -> dict:
    response = client.post("/api/v1/catalog/models/", {"repo_id": repo_id, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_import_and_read_back(hub, operator, viewer, hub_commits):
    body = _import(operator, TINY, reason="we need a tiny model")
    assert body["commit_sha"] == hub_commits[TINY][-1]
    assert body["parameter_source"] == "safetensors" and body["size_tier"] == "tiny"
    assert body["licence"] == "apache-2.0" and body["licence_allowed"] is True
    assert {f["path"] for f in body["files"]} >= {"config.json", "model.safetensors"}
    assert all(len(f["sha256"]) == 64 for f in body["files"])
    assert [v["name"] for v in body["variants"]] == ["original"]
    event = HistoryEvent.objects.get(verb="imported")
    assert event.reason == "we need a tiny model"

    detail = viewer.get(f"/api/v1/catalog/models/{body['id']}/")
    assert detail.status_code == 200
    assert detail["ETag"] == f'"{body["version"]}"'
    listing = viewer.get("/api/v1/catalog/models/").json()
    assert listing["count"] == 1
    assert listing["results"][0]["variant_count"] == 1


def test_list_filters(hub, operator, viewer):
    _import(operator, TINY)
    _import(operator, TINY_GGUF)

    def repos(query: str) -> list[str]:
        response = viewer.get(f"/api/v1/catalog/models/?{query}")
        assert response.status_code == 200, response.content
        return sorted(r["repo_id"] for r in response.json()["results"])

    assert repos("format=gguf") == [TINY_GGUF]
    assert repos("format=safetensors") == [TINY]
    assert repos("licence=MIT") == [TINY_GGUF]
    assert repos("q=gguf") == [TINY_GGUF]
    assert repos("tier=tiny") == [TINY, TINY_GGUF]
    assert repos("tier=small") == []


def test_list_query_count_does_not_grow_with_rows(hub, operator, viewer):
    _import(operator, TINY)
    with CaptureQueriesContext(connection) as one:
        viewer.get("/api/v1/catalog/models/")
    _import(operator, TINY_GGUF)
    with CaptureQueriesContext(connection) as two:
        viewer.get("/api/v1/catalog/models/")
    assert len(two) == len(one)
    with CaptureQueriesContext(connection) as variants_one:
        viewer.get("/api/v1/catalog/variants/")
    CatalogModel.objects.get(repo_id=TINY).variants.create(name="extra", format="gguf")
    with CaptureQueriesContext(connection) as variants_two:
        viewer.get("/api/v1/catalog/variants/")
    assert len(variants_two) == len(variants_one)


def test_errors_use_the_house_shape(hub, operator, viewer):
    gated = operator.post("/api/v1/catalog/models/", {"repo_id": GATED}, format="json")
    assert gated.status_code == 400
    assert gated.json()["code"] == "gated"
    assert gated.json()["detail"].startswith(f"{GATED} is gated: accept its licence")
    missing = operator.post("/api/v1/catalog/models/", {}, format="json")
    assert missing.status_code == 400 and "repo_id" in missing.json()["errors"]
    secret = operator.post(
        "/api/v1/catalog/models/", {"repo_id": TINY, "secret_name": "nope"}, format="json"
    )
    assert secret.status_code == 400 and "secret_name" in secret.json()["errors"]
    _import(operator, TINY)
    again = operator.post("/api/v1/catalog/models/", {"repo_id": TINY}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    denied = viewer.post("/api/v1/catalog/models/", {"repo_id": TINY_GGUF}, format="json")
    assert denied.status_code == 403


def test_resync_repin_and_delete_with_if_match(hub, operator, moving_repo):
    body = _import(operator, moving_repo["repo_id"])
    moving_repo["point_main_at"](1)
    diff = operator.post(f"/api/v1/catalog/models/{body['id']}/resync/")
    assert diff.status_code == 200
    data = diff.json()
    assert data["up_to_date"] is False and data["upstream_commit"] == moving_repo["commits"][1]
    assert (
        data["config"]["max_position_embeddings"]["after"]
        > (data["config"]["max_position_embeddings"]["before"])
    )
    url = f"/api/v1/catalog/models/{body['id']}/repin/"
    stale = operator.post(
        url, {"commit": data["upstream_commit"]}, format="json", HTTP_IF_MATCH='"99"'
    )
    assert stale.status_code == 412 and stale.json()["code"] == "stale_version"
    repinned = operator.post(
        url, {"commit": data["upstream_commit"]}, format="json", HTTP_IF_MATCH=diff["ETag"]
    )
    assert repinned.status_code == 200, repinned.content
    assert repinned.json()["commit_sha"] == moving_repo["commits"][1]
    assert repinned["ETag"] == f'"{body["version"] + 1}"'
    gone = operator.delete(f"/api/v1/catalog/models/{body['id']}/", HTTP_IF_MATCH='"1"')
    assert gone.status_code == 412
    gone = operator.delete(f"/api/v1/catalog/models/{body['id']}/", HTTP_IF_MATCH=repinned["ETag"])
    assert gone.status_code == 204
    assert not CatalogModel.objects.exists()


def test_variants_footprint_and_fits_on(hub, operator, viewer):
    body = _import(operator, TINY_GGUF)
    (variant,) = body["variants"]
    assert variant["quantization"] == "Q8_0" and variant["nominal_bits_per_weight"] == 8.5
    assert variant["licence_allowed"] is True and variant["licence_reason"] is None
    Node.objects.create(
        name="n1",
        state=NodeState.READY,
        last_heartbeat_at=timezone.now(),
        credential_hash="x",
        inventory={"memory": {"available_bytes": 8_000_000_000, "total_bytes": 16_000_000_000}},
    )
    listed = viewer.get(f"/api/v1/catalog/variants/?model={body['id']}").json()
    assert [v["id"] for v in listed["results"]] == [variant["id"]]

    fp = viewer.get(f"/api/v1/catalog/variants/{variant['id']}/footprint/?contexts=128,256")
    assert fp.status_code == 200
    rows = fp.json()["rows"]
    assert {(r["runtime"], r["context"], r["kv_cache_type"]) for r in rows} == {
        (rt, c, kv) for rt in ("llamacpp", "ollama") for c in (128, 256) for kv in ("f16", "q8_0")
    }
    # the tiny GGUF: 2 layers × 4 KV heads × head dim 16; KV at 256 tokens in f16
    row = next(r for r in rows if r["context"] == 256 and r["kv_cache_type"] == "f16")
    assert row["kv_cache_bytes"] == 2 * 2 * 4 * 16 * 256 * 2
    assert (
        row["total_bytes"] == row["weights_bytes"] + row["kv_cache_bytes"] + row["overhead_bytes"]
    )
    default = viewer.get(f"/api/v1/catalog/variants/{variant['id']}/footprint/").json()
    assert default["contexts"] == [256]  # the model's maximum is 256
    bad = viewer.get(f"/api/v1/catalog/variants/{variant['id']}/footprint/?contexts=abc")
    assert bad.status_code == 400 and "contexts" in bad.json()["errors"]

    fits = viewer.get(f"/api/v1/catalog/variants/{variant['id']}/fits-on/?kv_cache_type=q8_0")
    assert fits.status_code == 200
    matrix = fits.json()
    assert matrix["runtime"] == "llamacpp" and matrix["kv_cache_type"] == "q8_0"
    assert matrix["nodes"][0]["name"] == "n1" and matrix["nodes"][0]["cells"][0]["fits"]


def test_licence_policy_api(viewer, api_client_for, settings):
    settings.FLEET_DEFAULT_ALLOWED_LICENCES = ["mit"]
    current = viewer.get("/api/v1/catalog/licence-policy/")
    assert current.status_code == 200
    assert current.json() == {
        "licences": ["mit"],
        "is_default": True,
        "version": 0,
        "updated_at": None,
    }
    assert current["ETag"] == '"0"'
    assert (
        viewer.put(
            "/api/v1/catalog/licence-policy/", {"licences": ["apache-2.0"]}, format="json"
        ).status_code
        == 403
    )
    admin = api_client_for("admin")
    changed = admin.put(
        "/api/v1/catalog/licence-policy/",
        {"licences": ["apache-2.0", "MIT"], "reason": "policy review"},
        format="json",
        HTTP_IF_MATCH='"0"',
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["licences"] == ["apache-2.0", "mit"]
    assert changed["ETag"] == '"1"'
    stale = admin.put(
        "/api/v1/catalog/licence-policy/", {"licences": []}, format="json", HTTP_IF_MATCH='"0"'
    )
    assert stale.status_code == 412


def test_licence_outside_the_policy_is_marked_on_variants(hub, operator, viewer, settings):
    settings.FLEET_DEFAULT_ALLOWED_LICENCES = ["apache-2.0"]
    body = _import(operator, TINY_GGUF)  # MIT
    assert body["licence_allowed"] is False
    assert body["licence_reason"] == "licence mit is not in the allowed list"
    variant = viewer.get(f"/api/v1/catalog/variants/{body['variants'][0]['id']}/").json()
    assert variant["licence_allowed"] is False
    assert variant["licence_reason"] == "licence mit is not in the allowed list"


def test_search_marks_imported_models(hub, operator, viewer):
    _import(operator, TINY)
    response = viewer.get("/api/v1/catalog/search/?q=tiny&sort=downloads")
    assert response.status_code == 200, response.content
    results = response.json()
    assert [r["repo_id"] for r in results][:2] == [TINY, TINY_GGUF]  # 1234 vs 99 downloads
    assert results[0]["imported"] == CatalogModel.objects.get(repo_id=TINY).pk
    assert results[1]["imported"] is None
    gguf = viewer.get("/api/v1/catalog/search/?library=gguf").json()
    assert [r["repo_id"] for r in gguf] == [TINY_GGUF]
    bad = viewer.get("/api/v1/catalog/search/?q=tiny&sort=sideways")
    assert bad.status_code == 400
