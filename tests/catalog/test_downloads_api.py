"""The downloads API, the jobs API and pages, the agent job endpoints, and /ws/jobs/."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from config.asgi import application
from core import job_services
from core.history import ChangeContext
from core.jobs import Job, JobState
from fleet import services as fleet_services
from fleet.models import Node
from models_catalog import downloads
from models_catalog.models import CatalogModel, ModelFile, NodeModel, Variant
from tests.broker import JobMessages

COMMIT = "cd" * 20


@pytest.fixture(autouse=True)
def sent(db: None) -> Iterator[JobMessages]:
    """Nothing consumes the job messages these tests really send: they are read off Redis
    (and so removed) instead of piling up there."""
    messages = JobMessages()
    yield messages
    messages.clear()


@pytest.fixture
def ctx(operator_user: Any) -> ChangeContext:
    return ChangeContext.for_user(operator_user)


def client_as(user: Any) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def agent_client(credential: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    return client


def make_node(name: str) -> tuple[Node, str]:
    _, key = fleet_services.create_join_token(ChangeContext.system("tests"), name=name)
    return fleet_services.join_node(join_key=key, name=name)


def make_variant(name: str = "original") -> Variant:
    model, _ = CatalogModel.objects.get_or_create(
        repo_id="fleet-test/api", defaults={"commit_sha": COMMIT}
    )
    row, _ = ModelFile.objects.get_or_create(
        model=model, path="w.bin", defaults={"size": 10, "sha256": "a" * 64}
    )
    variant = Variant.objects.create(model=model, name=name, format="gguf", size=10)
    variant.files.set([row])
    return variant


# --- /api/v1/downloads/ -----------------------------------------------------------------------
@pytest.mark.django_db
def test_put_on_nodes_returns_one_job_per_node(operator_user, ctx):
    variant = make_variant()
    (a, _), (b, _) = make_node("api-a"), make_node("api-b")

    answer = client_as(operator_user).post(
        "/api/v1/downloads/",
        {"variant": variant.pk, "nodes": [a.pk, b.pk], "source": "upstream"},
        format="json",
    )

    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert [row["node_name"] for row in body] == ["api-a", "api-b"]
    assert {row["state"] for row in body} == {"queued"}
    assert all(row["target_name"] == str(variant) for row in body)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({"nodes": []}, "nodes", "This list may not be empty"),
        ({"nodes": [999999]}, "nodes", "Invalid pk"),
        ({"source": "ftp"}, "source", "is not a valid choice"),
        ({"variant": 999999}, "variant", "Invalid pk"),
    ],
)
def test_put_on_nodes_says_what_is_wrong(operator_user, body, field, text):
    variant = make_variant()
    node, _ = make_node("api-a")
    payload = {"variant": variant.pk, "nodes": [node.pk], **body}

    answer = client_as(operator_user).post("/api/v1/downloads/", payload, format="json")

    assert answer.status_code == 400
    assert text in " ".join(answer.json()["errors"][field])


@pytest.mark.django_db
def test_cache_endpoint_creates_the_cache_job(operator_user):
    variant = make_variant()
    answer = client_as(operator_user).post(
        "/api/v1/downloads/cache/", {"variant": variant.pk}, format="json"
    )
    assert answer.status_code == 202
    assert answer.json()["kind"] == "cache_variant" and answer.json()["node"] is None


# --- /api/v1/jobs/ ----------------------------------------------------------------------------
@pytest.mark.django_db
def test_jobs_list_filters_and_keeps_a_constant_query_count(viewer_user, ctx):
    variant = make_variant()
    nodes = [make_node(f"q-{i}")[0] for i in range(3)]
    client = client_as(viewer_user)
    downloads.put_variant_on_nodes(ctx, variant, nodes[:1], source="upstream")
    with CaptureQueriesContext(connection) as one:
        assert client.get("/api/v1/jobs/").status_code == 200
    downloads.put_variant_on_nodes(ctx, variant, nodes[1:], source="upstream")
    with CaptureQueriesContext(connection) as three:
        listing = client.get("/api/v1/jobs/").json()
    assert listing["count"] == 3
    assert len(three.captured_queries) == len(one.captured_queries)

    by_node = client.get(f"/api/v1/jobs/?node={nodes[1].pk}").json()["results"]
    assert [row["node_name"] for row in by_node] == ["q-1"]
    assert client.get("/api/v1/jobs/?kind=cache_variant").json()["count"] == 0
    assert client.get("/api/v1/jobs/?state=queued&target=api:orig").json()["count"] == 3
    assert client.get("/api/v1/jobs/?active=false").json()["count"] == 0
    bad = client.get("/api/v1/jobs/?state=nope")
    assert bad.status_code == 400


@pytest.mark.django_db
def test_job_detail_has_the_log_tail_and_viewers_cannot_act(viewer_user, operator_user, ctx):
    variant = make_variant()
    node, _ = make_node("d-a")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    detail = client_as(viewer_user).get(f"/api/v1/jobs/{job.pk}/")
    assert detail.status_code == 200
    assert "created by oscar" in detail.json()["log_tail"]
    assert detail["ETag"] == f'"{detail.json()["version"]}"'

    assert client_as(viewer_user).post(f"/api/v1/jobs/{job.pk}/cancel/").status_code == 403
    cancelled = client_as(operator_user).post(
        f"/api/v1/jobs/{job.pk}/cancel/", {"reason": "wrong node"}, format="json"
    )
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    again = client_as(operator_user).post(f"/api/v1/jobs/{job.pk}/cancel/")
    assert again.status_code == 409 and "nothing to cancel" in again.json()["detail"]
    retried = client_as(operator_user).post(f"/api/v1/jobs/{job.pk}/retry/")
    assert retried.status_code == 200 and retried.json()["state"] == "queued"


# --- /api/v1/node-models/ ---------------------------------------------------------------------
@pytest.mark.django_db
def test_node_models_pin_and_delete(operator_user, viewer_user, ctx):
    variant = make_variant()
    node, _ = make_node("inv-a")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    job_services.claim(job.pk, node.name)
    job_services.finish(
        job.pk,
        node.name,
        outcome="succeeded",
        result={"files": [{"path": "w.bin", "sha256": "a" * 64}], "size": 10, "commit": COMMIT},
    )
    placed = NodeModel.objects.get()
    listing = client_as(viewer_user).get(f"/api/v1/node-models/?node={node.pk}").json()
    assert listing["results"][0] | {} == listing["results"][0]
    row = listing["results"][0]
    assert (row["node_name"], row["variant_name"], row["repo_id"]) == (
        "inv-a",
        "original",
        "fleet-test/api",
    )
    assert row["state"] == "present" and row["commit_sha"] == COMMIT and row["verified_at"]

    operator = client_as(operator_user)
    assert (
        client_as(viewer_user)
        .patch(f"/api/v1/node-models/{placed.pk}/", {"pinned": True}, format="json")
        .status_code
        == 403
    )
    pinned = operator.patch(f"/api/v1/node-models/{placed.pk}/", {"pinned": True}, format="json")
    assert pinned.status_code == 200 and pinned.json()["pinned"] is True
    refused = operator.delete(f"/api/v1/node-models/{placed.pk}/")
    assert refused.status_code == 409 and "unpin it first" in refused.json()["detail"]
    operator.patch(f"/api/v1/node-models/{placed.pk}/", {"pinned": False}, format="json")
    assert operator.delete(f"/api/v1/node-models/{placed.pk}/").status_code == 202
    assert not NodeModel.objects.exists()


# --- agent endpoints --------------------------------------------------------------------------
@pytest.mark.django_db
def test_agent_job_endpoints_are_scoped_to_the_node(ctx):
    variant = make_variant()
    (node, credential), (_, other) = make_node("ag-a"), make_node("ag-b")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    mine, theirs = agent_client(credential), agent_client(other)

    assert theirs.post(f"/api/v1/agent/jobs/{job.pk}/claim/").status_code == 404
    assert (
        theirs.post(f"/api/v1/agent/jobs/{job.pk}/progress/", {}, format="json").status_code == 404
    )
    assert APIClient().post(f"/api/v1/agent/jobs/{job.pk}/claim/").status_code == 401

    claimed = mine.post(f"/api/v1/agent/jobs/{job.pk}/claim/")
    assert claimed.status_code == 200
    spec = claimed.json()
    assert (spec["repo_id"], spec["commit"], spec["source"]) == (
        "fleet-test/api",
        COMMIT,
        "upstream",
    )
    assert spec["files"] == [{"path": "w.bin", "size": 10, "sha256": "a" * 64, "blob_id": ""}]
    assert spec["node"] == "ag-a"

    progress = mine.post(
        f"/api/v1/agent/jobs/{job.pk}/progress/",
        {"progress": {"percent": "12.5", "bytes_done": 3, "evil": "<script>"}, "log": "hello"},
        format="json",
    )
    assert progress.json() == {"keep_going": True, "cancel_requested": False, "state": "running"}
    job.refresh_from_db()
    assert job.progress == {"percent": 12.5, "bytes_done": 3}

    job_services.request_cancel(ctx, job)
    answer = mine.post(f"/api/v1/agent/jobs/{job.pk}/progress/", {}, format="json").json()
    assert answer["cancel_requested"] is True
    finished = mine.post(
        f"/api/v1/agent/jobs/{job.pk}/finish/", {"outcome": "cancelled"}, format="json"
    )
    assert finished.status_code == 200 and finished.json()["state"] == "cancelled"
    late = mine.post(
        f"/api/v1/agent/jobs/{job.pk}/finish/", {"outcome": "succeeded"}, format="json"
    )
    assert late.status_code == 409 and late.json()["code"] == "lease_lost"
    again = mine.post(f"/api/v1/agent/jobs/{job.pk}/claim/")
    assert again.status_code == 409 and again.json()["state"] == "cancelled"


@pytest.mark.django_db
def test_people_cannot_use_the_agent_job_endpoints(operator_user, ctx):
    variant = make_variant()
    node, _ = make_node("ag-p")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    response = client_as(operator_user).post(f"/api/v1/agent/jobs/{job.pk}/claim/")
    assert response.status_code == 401
    assert Job.objects.get(pk=job.pk).state == JobState.QUEUED


# --- pages ------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_jobs_page_lists_jobs_with_progress_and_filters(client, viewer_user, ctx):
    variant = make_variant()
    node, _ = make_node("page-a")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    job_services.claim(job.pk, node.name)
    job_services.report_progress(
        job.pk,
        node.name,
        {
            "percent": 42.0,
            "bytes_done": 4200,
            "bytes_total": 10000,
            "rate_bps": 2048.0,
            "eta_s": 3.0,
            "current_file": "w.bin",
        },
    )
    client.force_login(viewer_user)

    page = client.get("/jobs/")
    html = page.content.decode()
    assert page.status_code == 200
    assert f'data-job="{job.pk}"' in html and 'data-job-active="1"' in html
    assert "42% · 4.1\xa0KB of 9.8\xa0KB · 2.0\xa0KB/s · ETA 3 s" in html
    assert "w.bin" in html and "page-a" in html and "js/jobs.js" in html
    filtered = client.get("/jobs/?state=failed", HTTP_HX_REQUEST="true").content.decode()
    assert "No jobs match these filters." in filtered and "<html" not in filtered


@pytest.mark.django_db
def test_job_detail_page_shows_the_log_and_buttons_for_operators(
    client, viewer_user, operator_user, ctx
):
    variant = make_variant()
    node, _ = make_node("page-b")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    job_services.claim(job.pk, node.name)
    job_services.finish(
        job.pk, node.name, outcome="failed", error="Not enough disk space on page-b"
    )

    client.force_login(viewer_user)
    html = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "Not enough disk space on page-b" in html and "claimed by page-b" in html
    assert 'data-action="retry"' not in html
    assert client.post(f"/jobs/{job.pk}/action/", {"action": "retry"}).status_code == 403

    client.force_login(operator_user)
    html = client.get(f"/jobs/{job.pk}/").content.decode()
    assert 'data-action="retry"' in html and 'data-action="cancel"' not in html
    response = client.post(f"/jobs/{job.pk}/action/", {"action": "retry"})
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert Job.objects.get(pk=job.pk).state == JobState.QUEUED


# --- /ws/jobs/ --------------------------------------------------------------------------------
ORIGIN = (b"origin", b"http://localhost")


@database_sync_to_async
def session_cookie_for(user: Any) -> bytes:
    from django.test import Client

    client = Client()
    client.force_login(user)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return f"{settings.SESSION_COOKIE_NAME}={value}".encode()


def jobs_socket(*headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, "/ws/jobs/", headers=[(b"host", b"localhost"), *headers]
    )


@pytest.mark.django_db(transaction=True)
async def test_jobs_socket_is_refused_without_sign_in():
    connected, _ = await jobs_socket(ORIGIN).connect()
    assert connected is False


@pytest.mark.django_db(transaction=True)
async def test_jobs_socket_streams_progress_of_subscribed_jobs(viewer_user, operator_user):
    variant = await database_sync_to_async(make_variant)()
    node, _ = await database_sync_to_async(make_node)("ws-a")
    ctx = ChangeContext.for_user(operator_user)
    (job,) = await database_sync_to_async(downloads.put_variant_on_nodes)(
        ctx, variant, [node], source="upstream"
    )
    communicator = jobs_socket(ORIGIN, (b"cookie", await session_cookie_for(viewer_user)))
    assert (await communicator.connect())[0]
    try:
        await communicator.send_json_to({"subscribe": "settings"})
        assert (await communicator.receive_json_from(timeout=5))["type"] == "error"
        await communicator.send_json_to({"subscribe": f"job.{job.pk}"})
        assert (await communicator.receive_json_from(timeout=5))["type"] == "subscribed"

        await database_sync_to_async(job_services.claim)(job.pk, node.name)
        message = await communicator.receive_json_from(timeout=5)
        while message["payload"].get("state") != "running":
            message = await communicator.receive_json_from(timeout=5)
        assert message["type"] == "job.update" and message["payload"]["transition"] is True
        await asyncio.sleep(job_services.PUSH_MIN_INTERVAL_S)  # progress pushes are spaced
        await database_sync_to_async(job_services.report_progress)(
            job.pk, node.name, {"percent": 50.0, "current_file": "w.bin"}
        )
        progress = await communicator.receive_json_from(timeout=5)
        while progress["payload"].get("transition"):
            progress = await communicator.receive_json_from(timeout=5)
        assert progress["payload"]["id"] == job.pk
        assert progress["payload"]["progress"]["current_file"] == "w.bin"
    finally:
        await communicator.disconnect()


@pytest.mark.django_db
def test_node_page_shows_its_models_and_downloads_live(client, viewer_user, ctx):
    variant = make_variant()
    node, _ = make_node("page-n")
    (job,) = downloads.put_variant_on_nodes(ctx, variant, [node], source="upstream")
    job_services.claim(job.pk, node.name)
    job_services.report_progress(
        job.pk, node.name, {"percent": 30.0, "bytes_done": 3, "bytes_total": 10}
    )
    client.force_login(viewer_user)

    html = client.get(f"/nodes/{node.pk}/").content.decode()

    assert f'data-live-groups="node.{node.pk}"' in html and "js/jobs.js" in html
    assert f'data-job-progress="{job.pk}"' in html and "30% · 3\xa0bytes of 10\xa0bytes" in html
    assert "fleet-test/api:original" in html and "downloading" in html
    panel = client.get(f"/nodes/{node.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "<h2>Models</h2>" in panel and 'id="downloads-panel"' not in panel
    assert "<html" not in panel
