"""The overview leads with the fleet: nodes, replicas, deployments failing or rolling, jobs,
GPU memory, gateway traffic, each a link to its filtered list; a newcomer sees what to do
next (import, deploy, try) and, when no node can run containers, how to get Docker."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from deployments.choices import RolloutState
from deployments.models import Rollout
from fleet.choices import NodeState
from models_catalog.models import CatalogModel
from tests.deployments.builders import bare_deployment, gguf_variant, node

pytestmark = pytest.mark.django_db

GB = 1024**3


@pytest.fixture
def viewer_client(viewer_user) -> Client:
    client = Client()
    client.force_login(viewer_user)
    return client


def tiles(page: str) -> dict[str, tuple[str, str]]:
    """``{key: (href, value)}`` of the fleet tiles, in page order."""
    found = re.findall(
        r'<a class="card stat tile[^"]*" href="([^"]+)" data-tile="([a-z_]+)">\s*'
        r'<span data-testid="tile-[a-z_]+">([^<]*)</span>',
        page,
    )
    return {key: (href, value) for href, key, value in found}


def test_the_fleet_comes_first_and_every_tile_links_to_its_list(viewer_client):
    gpu = {"memory_total_bytes": 24 * GB, "memory_free_bytes": 20 * GB}
    node("gpu-1", gpus=[gpu, gpu])
    node("gone-1", state=NodeState.UNREACHABLE)
    page = viewer_client.get("/").content.decode()
    shown = tiles(page)
    assert list(shown) == [
        "nodes",
        "gpu_memory",
        "replicas",
        "deployments_failing",
        "deployments_rolling",
        "jobs",
        "gateway",
    ]
    assert shown["nodes"] == ("/nodes/?status=unreachable", "1 / 2")
    assert "1 unreachable" in page
    assert shown["gpu_memory"][1] == "40.0\xa0GB"
    assert "of 48.0\xa0GB on 2 GPUs" in page
    # Users, tokens and secrets come after the fleet.
    assert page.index('data-testid="fleet-tiles"') < page.index('data-testid="count-users"')
    for href, _ in shown.values():
        assert viewer_client.get(href).status_code == 200, href


def test_a_failed_rollout_shows_as_a_failing_deployment(viewer_client, operator_user):
    deployment = bare_deployment(operator_user, "broken", gguf_variant(), replicas=2)
    Rollout.objects.create(
        deployment=deployment, to_revision=deployment.current_revision, state=RolloutState.FAILED
    )
    shown = tiles(viewer_client.get("/").content.decode())
    assert shown["deployments_failing"] == ("/deployments/?status=failed", "1")
    assert shown["replicas"][1] == "0 / 2"
    listed = viewer_client.get("/deployments/?status=failed").content.decode()
    assert "broken" in listed


def test_a_newcomer_is_told_what_to_do_next(viewer_client):
    page = viewer_client.get("/").content.decode()
    assert 'data-testid="getting-started"' in page
    assert re.findall(r'data-step="(\w+)"', page) == ["import", "deploy", "try"]
    assert 'href="/catalog/import/"' in page and 'href="/deployments/new/"' in page
    assert "No node has joined yet" in page

    node("local")  # joined, but its inventory has no reachable Docker engine
    page = viewer_client.get("/").content.decode()
    assert "install the Docker engine" in page

    docker = node("with-docker")
    docker.inventory["docker"] = {"reachable": True, "version": "26.1"}
    docker.save(update_fields=["inventory"])
    CatalogModel.objects.create(repo_id="acme/tiny", commit_sha="a" * 40)
    page = viewer_client.get("/").content.decode()
    assert "install the Docker engine" not in page
    assert re.search(r'data-step="import" class="step-done"', page)
