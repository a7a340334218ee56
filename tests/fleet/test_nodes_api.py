"""The nodes REST API: join, agent endpoints (node credentials only), operator endpoints."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from core.history import ChangeContext
from core.models import HistoryEvent
from fleet import services
from fleet.choices import CommandKind, CommandState, NodeState
from fleet.models import Node, NodeCommand, hash_secret
from tests.fleet.agents import heartbeat_payload

pytestmark = pytest.mark.django_db

JOIN_URL = "/api/v1/agent/join/"
HEARTBEAT_URL = "/api/v1/agent/heartbeat/"


def result_url(command_id: int) -> str:
    return f"/api/v1/agent/commands/{command_id}/result/"


@pytest.fixture(autouse=True)
def _fresh_throttle():
    cache.clear()  # the join throttle counts in the default cache
    yield
    cache.clear()


@pytest.fixture
def ctx(operator_user) -> ChangeContext:
    return ChangeContext.for_user(operator_user)


@pytest.fixture
def token_key(ctx) -> str:
    _, key = services.create_join_token(ctx, name="api", max_uses=10, labels={"zone": "z1"})
    return key


def node_client(credential: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    return client


def heartbeat(client: APIClient, payload: dict[str, Any] | None = None, raw: bytes | None = None):
    body = raw if raw is not None else json.dumps(payload or heartbeat_payload()).encode()
    return client.generic("POST", HEARTBEAT_URL, body, content_type="application/json")


@pytest.fixture
def two_nodes(token_key) -> dict[str, tuple[Node, str]]:
    out = {}
    for name in ("node-a", "node-b"):
        node, credential = services.join_node(join_key=token_key, name=name)
        out[name] = (node, credential)
    return out


# --- Join ------------------------------------------------------------------------------------
def test_agent_joins_over_rest_and_gets_its_credential_queue_and_broker(token_key, settings):
    response = APIClient().post(
        JOIN_URL, {"join_token": token_key, "name": "gpu-01", "inventory": {}}, format="json"
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    node = Node.objects.get(name="gpu-01")
    assert body["node_id"] == node.pk
    assert body["queue"] == f"node.{node.pk}"
    assert body["credential"].startswith("slmn_")
    assert node.credential_hash == hash_secret(body["credential"])
    assert body["broker_url"] == settings.FLEET_AGENT_BROKER_URL
    assert body["heartbeat_interval_seconds"] == settings.FLEET_HEARTBEAT_INTERVAL_SECONDS
    assert body["command_ttl_seconds"] == settings.FLEET_COMMAND_TTL_SECONDS
    assert node.labels == {"zone": "z1"}
    assert node.state == NodeState.PENDING


@pytest.mark.parametrize(
    ("payload", "status", "detail"),
    [
        ({"join_token": "slmj_nope", "name": "x1"}, 403, "Unknown join token"),
        ({"name": "x1"}, 400, "join_token"),
        ({"join_token": "", "name": "x1"}, 400, "join_token"),
        ({"join_token": "KEY", "name": "not a slug!"}, 400, "name"),
    ],
)
def test_join_is_refused_with_a_clear_message(token_key, payload, status, detail):
    payload = {k: (token_key if v == "KEY" else v) for k, v in payload.items()}
    response = APIClient().post(JOIN_URL, payload, format="json")
    assert response.status_code == status, response.json()
    assert detail in response.json()["detail"]
    assert not Node.objects.exists()


def test_join_with_a_name_held_by_a_live_node_is_409(token_key):
    first = APIClient().post(JOIN_URL, {"join_token": token_key, "name": "dup"}, format="json")
    assert first.status_code == 201
    again = APIClient().post(JOIN_URL, {"join_token": token_key, "name": "dup"}, format="json")
    assert again.status_code == 409
    assert "A live node is already called 'dup'" in again.json()["detail"]
    assert Node.objects.count() == 1


# --- Heartbeat (the DRF view; the ASGI fast path has its own tests) --------------------------
def test_heartbeat_view_marks_the_node_ready(two_nodes):
    node, credential = two_nodes["node-a"]
    response = heartbeat(node_client(credential))
    assert response.status_code == 200, response.json()
    assert response.json()["node_id"] == node.pk
    node.refresh_from_db()
    assert node.state == NodeState.READY and node.last_heartbeat_at is not None


def test_heartbeat_view_refuses_get_bad_credentials_bad_and_big_bodies(two_nodes, settings):
    node, credential = two_nodes["node-a"]
    client = node_client(credential)
    assert client.get(HEARTBEAT_URL).status_code == 405
    refused = heartbeat(node_client("slmn_" + "Z" * 43))
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == 'Bearer realm="agent"'
    assert heartbeat(APIClient()).status_code == 401
    assert heartbeat(client, raw=b"{oops").status_code == 400
    assert heartbeat(client, heartbeat_payload(cpu={"cores": -2})).status_code == 400
    # the addresses replicas bind and are reached at go into container commands
    for bad in ({"address": "10.0.0.1 --api-key x"}, {"replica_bind": "all"}):
        refused = heartbeat(client, heartbeat_payload(host=bad))
        assert refused.status_code == 400
        assert "must be an IP address" in json.dumps(refused.json())
    big = json.dumps(heartbeat_payload()).encode() + b" " * settings.FLEET_HEARTBEAT_MAX_BYTES
    too_large = heartbeat(client, raw=big)
    assert too_large.status_code == 413
    assert too_large.json()["code"] == "too_large"
    node.refresh_from_db()
    assert node.state == NodeState.PENDING and node.last_heartbeat_at is None


def test_heartbeat_view_answers_413_also_beyond_djangos_upload_limit(two_nodes, settings):
    """Bodies over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) are oversized heartbeats too."""
    node, credential = two_nodes["node-a"]
    huge = json.dumps(heartbeat_payload()).encode() + b" " * (3 * 2**20)
    response = heartbeat(node_client(credential), raw=huge)
    assert response.status_code == 413, (response.status_code, response.content[:300])
    node.refresh_from_db()
    assert node.last_heartbeat_at is None


# --- Node credentials are for agent endpoints only -------------------------------------------
@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/v1/nodes/"),
        ("get", "/api/v1/node-commands/"),
        ("get", "/api/v1/join-tokens/"),
        ("post", "/api/v1/join-tokens/"),
        ("get", "/api/v1/me/"),
        ("get", "/api/v1/history/"),
    ],
)
def test_node_credential_is_refused_on_user_endpoints(two_nodes, method, url):
    _, credential = two_nodes["node-a"]
    response = getattr(node_client(credential), method)(url, {}, format="json")
    assert response.status_code == 401, (url, response.status_code, response.content[:300])


def test_node_credential_cannot_act_on_nodes(two_nodes):
    node, credential = two_nodes["node-a"]
    client = node_client(credential)
    for url in (f"/api/v1/nodes/{node.pk}/probe/", f"/api/v1/nodes/{node.pk}/rotate-credential/"):
        assert client.post(url).status_code == 401, url
    assert client.delete(f"/api/v1/nodes/{node.pk}/").status_code == 401
    assert Node.objects.filter(pk=node.pk).exists()
    assert not NodeCommand.objects.exists()


def _command(node: Node, ttl: float = 60) -> NodeCommand:
    return NodeCommand.objects.create(
        node=node, kind=CommandKind.PROBE, expires_at=timezone.now() + timedelta(seconds=ttl)
    )


def test_agent_endpoints_accept_only_node_credentials(
    two_nodes, api_client_for, operator_user, token_for, bearer_client
):
    node, _ = two_nodes["node-a"]
    command = _command(node)
    body = {"result": {"forged": True}, "error": None}
    assert APIClient().post(result_url(command.pk), body, format="json").status_code == 401
    operator = api_client_for("operator")
    assert operator.post(result_url(command.pk), body, format="json").status_code == 401
    user_token = bearer_client(token_for(operator_user))
    assert user_token.post(result_url(command.pk), body, format="json").status_code == 401
    command.refresh_from_db()
    assert command.state == CommandState.SENT and command.result == {}


def test_a_node_cannot_complete_another_nodes_command(two_nodes):
    _, cred_a = two_nodes["node-a"]
    b, cred_b = two_nodes["node-b"]
    theirs = _command(b)

    forged = node_client(cred_a).post(
        result_url(theirs.pk), {"result": {"forged": True}}, format="json"
    )

    assert forged.status_code == 400
    assert forged.json()["detail"] == "No such command for this node."
    theirs.refresh_from_db()
    assert theirs.state == CommandState.SENT and theirs.result == {}

    own = node_client(cred_b).post(
        result_url(theirs.pk), {"result": {"docker": {"reachable": True}}}, format="json"
    )
    assert own.status_code == 200, own.json()
    assert own.json()["state"] == CommandState.SUCCEEDED
    assert own.json()["node"] == "node-b"
    theirs.refresh_from_db()
    assert theirs.result == {"docker": {"reachable": True}}


def test_deleted_nodes_credential_is_refused_on_agent_endpoints(ctx, two_nodes):
    node, credential = two_nodes["node-a"]
    command = _command(node)
    services.delete_node(ctx, node)
    response = node_client(credential).post(result_url(command.pk), {"result": {}}, format="json")
    assert response.status_code == 401
    assert "no" in response.json()["detail"] and "deleted" in response.json()["detail"]


def test_rotated_credential_used_first_on_the_command_endpoint_retires_the_old_one(ctx, two_nodes):
    node, old = two_nodes["node-a"]
    assert heartbeat(node_client(old)).status_code == 200
    services.rotate_credential(ctx, node)
    new = heartbeat(node_client(old)).json()["new_credential"]

    command = _command(node)
    response = node_client(new).post(result_url(command.pk), {"result": {}}, format="json")

    assert response.status_code == 200, response.json()
    node.refresh_from_db()
    assert node.credential_hash == hash_secret(new)
    assert node.credential_prefix == new[:11]
    assert heartbeat(node_client(old)).status_code == 401
    assert heartbeat(node_client(new)).status_code == 200


# --- Operator endpoints ----------------------------------------------------------------------
def test_probe_creates_a_command_row_and_sends_it_on_the_node_queue(
    two_nodes, api_client_for, sent_tasks, django_capture_on_commit_callbacks, settings
):
    settings.FLEET_COMMAND_TTL_SECONDS = 45
    node, _ = two_nodes["node-a"]
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client_for("operator").post(f"/api/v1/nodes/{node.pk}/probe/")

    assert response.status_code == 202, response.json()
    body = response.json()
    command = NodeCommand.objects.get(pk=body["id"])
    assert (command.node_id, command.kind, command.state) == (node.pk, "probe", "sent")
    assert command.requested_by == "oscar"
    assert body["state"] == "sent" and body["node"] == "node-a"
    assert (command.expires_at - command.created_at).total_seconds() == pytest.approx(45, abs=1)
    assert sent_tasks.drain() == [
        {
            "name": "fleet.agent.probe",
            "args": [command.pk, {}],
            "queue": f"node.{node.pk}",
            "expires": command.expires_at,
        }
    ]


def test_viewers_cannot_probe_rotate_or_delete(two_nodes, api_client_for, sent_tasks):
    node, _ = two_nodes["node-a"]
    viewer = api_client_for("viewer")
    assert viewer.get(f"/api/v1/nodes/{node.pk}/").status_code == 200
    assert viewer.post(f"/api/v1/nodes/{node.pk}/probe/").status_code == 403
    assert viewer.post(f"/api/v1/nodes/{node.pk}/rotate-credential/").status_code == 403
    assert viewer.delete(f"/api/v1/nodes/{node.pk}/").status_code == 403
    assert viewer.get("/api/v1/join-tokens/").status_code == 403
    assert not NodeCommand.objects.exists() and sent_tasks.drain() == []


def test_rotate_and_delete_through_the_api(two_nodes, api_client_for):
    node, credential = two_nodes["node-a"]
    operator = api_client_for("operator")

    rotated = operator.post(f"/api/v1/nodes/{node.pk}/rotate-credential/")
    assert rotated.status_code == 200, rotated.json()
    assert rotated.json()["credential_rotation_pending"] is True
    assert "credential" not in rotated.json()  # the new one goes to the agent only
    assert heartbeat(node_client(credential)).json()["new_credential"].startswith("slmn_")

    deleted = operator.delete(f"/api/v1/nodes/{node.pk}/")
    assert deleted.status_code == 204
    assert heartbeat(node_client(credential)).status_code == 401
    assert HistoryEvent.objects.filter(
        target_type="fleet.node", target_id=str(node.pk), verb="deleted", actor_name="oscar"
    ).exists()


def test_join_token_key_is_shown_once_with_the_agent_command(api_client_for):
    operator = api_client_for("operator")
    created = operator.post(
        "/api/v1/join-tokens/",
        {"name": "lab", "max_uses": 2, "labels": {"site": "lab"}},
        format="json",
    )
    assert created.status_code == 201, created.json()
    key = created.json()["key"]
    assert key.startswith("slmj_")
    command = created.json()["command"]
    assert "python manage.py fleet_agent" in command and f"--join-token {key}" in command
    listed = operator.get("/api/v1/join-tokens/")
    assert key not in json.dumps(listed.json())
    assert listed.json()["results"][0]["status"] == "active"

    revoked = operator.delete(f"/api/v1/join-tokens/{created.json()['id']}/")
    assert revoked.status_code == 204
    refused = APIClient().post(JOIN_URL, {"join_token": key, "name": "late"}, format="json")
    assert refused.status_code == 403
    assert "revoked" in refused.json()["detail"]


def test_operators_rotate_and_delete_from_the_console(two_nodes, operator_user, client):
    node, credential = two_nodes["node-a"]
    client.force_login(operator_user)

    rotated = client.post(f"/nodes/{node.pk}/action/", {"action": "rotate-credential"})
    assert rotated.status_code == 302
    node.refresh_from_db()
    assert node.pending_credential_hash
    new = heartbeat(node_client(credential)).json()["new_credential"]
    assert hash_secret(new) == node.pending_credential_hash

    deleted = client.post(f"/nodes/{node.pk}/action/", {"action": "delete"})
    assert deleted.status_code == 302
    assert heartbeat(node_client(credential)).status_code == 401
    assert heartbeat(node_client(new)).status_code == 401


@pytest.mark.django_db
def test_a_restarted_agent_hands_back_its_jobs_at_once(settings):
    """The agent calls agent/jobs/release/ on start: jobs it held run again without waiting
    for their leases to expire; other nodes' jobs are left alone."""
    from core.jobs import Job, JobKind, JobState
    from fleet import services

    _, key = services.create_join_token(ChangeContext.system(), name="t", max_uses=2)
    mine, credential = services.join_node(join_key=key, name="restarted")
    other, _ = services.join_node(join_key=key, name="bystander")
    lease = timezone.now() + timedelta(minutes=5)
    common = {
        "kind": JobKind.DOWNLOAD,
        "target_type": "x",
        "target_id": "1",
        "target_name": "x",
        "state": JobState.RUNNING,
        "lease_expires_at": lease,
        "actor_type": "system",
        "actor_name": "test",
    }
    held = Job.objects.create(node=mine, lease_owner="restarted", **common)
    foreign = Job.objects.create(node=other, lease_owner="bystander", **common)

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    response = client.post("/api/v1/agent/jobs/release/")
    assert response.status_code == 200, response.content
    assert response.json()["released"] == [held.pk]
    held.refresh_from_db()
    foreign.refresh_from_db()
    assert held.state == JobState.QUEUED and held.lease_owner == ""
    assert foreign.state == JobState.RUNNING and foreign.lease_owner == "bystander"
