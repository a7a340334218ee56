"""Agents' replica reports through the ASGI fast path (``deployments.asgi_reports``), driven
through ``config.asgi.application`` itself, and answered exactly as the DRF view answers
them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import connections
from rest_framework.test import APIClient

from core.history import ChangeContext
from deployments import asgi_reports
from deployments import services as deployment_services
from deployments.choices import ReplicaState
from deployments.models import Replica
from fleet import services as fleet_services
from tests.deployments.builders import gguf_variant, qwen
from tests.fleet.test_nodes_asgi import call

pytestmark = pytest.mark.django_db(transaction=True)


def path(replica_id: int) -> str:
    return f"/api/v1/agent/replicas/{replica_id}/status/"


@pytest.fixture
def world(operator_user) -> dict[str, Any]:
    """Two joined nodes (real credentials); two starting replicas on the first."""
    ctx = ChangeContext.for_user(operator_user)
    _, key = fleet_services.create_join_token(ctx, name="reports", max_uses=2)
    node, credential = fleet_services.join_node(join_key=key, name="reports-a")
    _, other_credential = fleet_services.join_node(join_key=key, name="reports-b")
    variant = gguf_variant(qwen("fleet-test/reports"))
    deployment = deployment_services.create_deployment(
        ctx, "reports", {"variant": variant.pk, "runtime": "llamacpp", "replicas": 2}
    )
    replicas = [
        Replica.objects.create(
            deployment=deployment,
            revision=deployment.current_revision,
            slot=slot,
            node=node,
            state=ReplicaState.STARTING,
            host_port=20000 + slot,
        )
        for slot in (0, 1)
    ]
    return {"credential": credential, "other": other_credential, "replicas": replicas}


@pytest.fixture
async def close_pool_connections():
    """The pool's threads close their connections after each report (CONN_MAX_AGE=0 here)."""
    yield
    await database_sync_to_async(connections.close_all)()


def drf(method: str, url: str, credential: str | None, body: bytes) -> tuple[int, Any]:
    """The same request through Django and the DRF view (the reference)."""
    client = APIClient()
    if credential is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    response = getattr(client, method.lower())(url, body, content_type="application/json")
    return response.status_code, json.loads(response.content) if response.content else None


async def test_a_healthy_report_is_applied_without_django_in_the_way(world, close_pool_connections):
    replica = world["replicas"][0]
    body = json.dumps({"state": "healthy", "container_id": "c0ffee", "restarts": 0}).encode()

    answer = await call("POST", path(replica.pk), body=body, credential=world["credential"])

    assert answer.status == 200, answer.body
    assert answer.json() == {"state": "healthy", "reason": ""}
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"]
    assert "x-frame-options" not in answer.headers  # Django's middleware never ran
    row = await database_sync_to_async(Replica.objects.get)(pk=replica.pk)
    assert row.state == ReplicaState.HEALTHY
    assert row.container_id == "c0ffee" and row.healthy_since is not None


CASES = [
    # (name, method, which replica, credential, body)
    ("no credential", "POST", 0, None, b'{"state": "healthy"}'),
    ("unknown credential", "POST", 0, "slmn_" + "Z" * 43, b'{"state": "healthy"}'),
    ("another node's replica", "POST", 0, "other", b'{"state": "healthy"}'),
    ("no such replica", "POST", None, "own", b'{"state": "healthy"}'),
    ("malformed JSON", "POST", 0, "own", b"{oops"),
    ("unknown state", "POST", 0, "own", b'{"state": "exploded"}'),
    ("negative restarts", "POST", 0, "own", b'{"state": "failed", "restarts": -1}'),
    ("a failure", "POST", 1, "own", b'{"state": "failed", "error": "exit 1"}'),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
async def test_answers_are_the_drf_views_answers(world, close_pool_connections, case):
    _, method, index, who, body = case
    credential = {"own": world["credential"], "other": world["other"]}.get(who, who)
    replica_id = world["replicas"][index].pk if index is not None else 10**9
    fast = await call(method, path(replica_id), body=body, credential=credential)
    if case[0] == "a failure":  # applying twice is a no-op; the reference sees the result
        assert fast.status == 200 and fast.json()["state"] == ReplicaState.FAILED
    status, reference = await database_sync_to_async(drf)(
        method, path(replica_id), credential, body
    )
    assert (fast.status, fast.json()) == (status, reference)
    if status == 401:
        assert fast.headers["www-authenticate"] == 'Bearer realm="agent"'


async def test_wrong_method_and_oversized_bodies(world, close_pool_connections):
    replica = world["replicas"][0]
    wrong = await call("GET", path(replica.pk), credential=world["credential"])
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"
    big = b'{"state": "failed", "error": "' + b"x" * asgi_reports.MAX_BODY_BYTES + b'"}'
    refused = await call(
        "POST", path(replica.pk), body=big, credential=world["credential"], chunk_size=4096
    )
    assert refused.status == 413 and refused.json()["code"] == "too_large"
    row = await database_sync_to_async(Replica.objects.get)(pk=replica.pk)
    assert row.state == ReplicaState.STARTING  # nothing applied
