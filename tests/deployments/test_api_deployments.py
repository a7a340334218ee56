"""/api/v1/deployments/, /replicas/ and /rollouts/: create, PATCH with If-Match, actions,
revisions with diffs, delete, read-only lists with filters and a constant query count."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.history import ChangeContext
from deployments import services
from deployments.choices import ReplicaState, RolloutState
from deployments.models import Deployment, Replica, Rollout
from tests.deployments.builders import bare_deployment, deploy, gguf_variant, node, spec

pytestmark = pytest.mark.django_db
URL = "/api/v1/deployments/"


@pytest.fixture
def client(api_client_for):
    return api_client_for("operator")


def create(client, name: str = "qwen", **spec_fields: Any) -> Any:
    variant = spec_fields.pop("variant", None) or gguf_variant()
    body = {"name": name, "spec": spec(variant, **spec_fields), "reason": "first try"}
    return client.post(URL, body, format="json")


def test_create_answers_the_normalized_spec_with_an_etag(client):
    response = create(client, replicas=2, runtime_args={"ctx-size": 8192})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert response["ETag"] == f'"{body["version"]}"'
    assert body["revision"] == 1 and body["desired_replicas"] == 2
    assert body["status"] == "progressing" and body["state"] == "active"
    assert body["spec"]["runtime_args"] == {"context_size": 8192}
    assert body["spec"]["strategy"]["auto_revert"] is True
    assert body["created_by"] == "oscar"
    assert client.get(f"{URL}{body['id']}/").json() == body, "the 201 is the deployment as read"


def test_invalid_specs_answer_per_field_errors(client):
    response = create(client, runtime_args={"nope": 1}, env={"HF_TOKEN": "x"}, replicas=99)
    assert response.status_code == 400
    errors = response.json()["errors"]["spec"]
    assert "unknown argument 'nope'" in errors["runtime_args"]["nope"][0]
    assert "names a secret" in errors["env"]["HF_TOKEN"][0]
    assert errors["replicas"] == ["Ensure this value is less than or equal to 64."]
    assert not Deployment.objects.exists()


def test_licence_refusal_carries_the_catalogs_reason(client, admin_user):
    from models_catalog.services import set_allowed_licences

    set_allowed_licences(ChangeContext.for_user(admin_user), ["mit"])
    response = create(client)
    assert response.status_code == 400
    assert response.json()["errors"]["spec"]["variant"] == [
        "Refused by the licence policy: licence apache-2.0 is not in the allowed list."
    ]


def test_patch_with_if_match_makes_a_revision_and_a_stale_one_is_412(client):
    created = create(client).json()
    url = f"{URL}{created['id']}/"
    response = client.patch(
        url,
        {"spec": {"runtime_args": {"parallel": 4}}, "reason": "more slots"},
        format="json",
        HTTP_IF_MATCH=f'"{created["version"]}"',
    )
    assert response.status_code == 200, response.json()
    assert response.json()["revision"] == 2
    assert response["ETag"] == f'"{created["version"] + 1}"'
    stale = client.patch(
        url,
        {"spec": {"runtime_args": {"parallel": 8}}},
        format="json",
        HTTP_IF_MATCH=f'"{created["version"]}"',
    )
    assert stale.status_code == 412
    assert stale.json()["code"] == "stale_version"
    assert Deployment.objects.get().current_revision.number == 2  # type: ignore[union-attr]
    same = client.patch(url, {"spec": {"runtime_args": {"parallel": 4}}}, format="json")
    assert same.json()["revision"] == 2, "no change, no revision"
    bad = client.patch(url, {"spec": {"port": 22}}, format="json")
    assert bad.status_code == 400
    assert "port" in bad.json()["errors"]["spec"]


def test_put_is_not_offered(client):
    created = create(client).json()
    assert client.put(f"{URL}{created['id']}/", {}, format="json").status_code == 405


def test_revisions_list_newest_first_with_diffs(client):
    created = create(client).json()
    client.patch(f"{URL}{created['id']}/", {"spec": {"env": {"A": "1"}}}, format="json")
    response = client.get(f"{URL}{created['id']}/revisions/")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [r["number"] for r in rows] == [2, 1]
    assert rows[0]["diff"]["env.A"] == {"before": None, "after": "1"}
    assert rows[0]["is_current"] is True and rows[1]["is_current"] is False
    assert rows[1]["reason"] == "first try" and rows[1]["author_name"] == "oscar"
    assert rows[0]["variant_name"].startswith("Qwen/Qwen2.5-0.5B-Instruct:")


def test_actions(client):
    created = create(client).json()
    base = f"{URL}{created['id']}/"
    scaled = client.post(base + "scale/", {"replicas": 3}, format="json")
    assert scaled.status_code == 200 and scaled.json()["desired_replicas"] == 3
    assert scaled.json()["revision"] == 1
    assert client.post(base + "pause/", {"reason": "hold"}, format="json").json()["state"] == (
        "paused"
    )
    assert client.post(base + "resume/", {}, format="json").json()["state"] == "active"
    assert client.post(base + "stop/", {}, format="json").json()["status"] == "stopped"
    assert client.post(base + "start/", {}, format="json").json()["state"] == "active"
    client.patch(base, {"spec": {"runtime_args": {"parallel": 2}}}, format="json")
    back = client.post(base + "rollback/", {"revision": 1}, format="json")
    assert back.status_code == 200 and back.json()["revision"] == 3
    again = client.post(base + "rollback/", {"revision": 3}, format="json")
    assert again.status_code == 409
    stale = client.post(base + "scale/", {"replicas": 1}, format="json", HTTP_IF_MATCH='"1"')
    assert stale.status_code == 412


def test_delete_is_immediate_without_replicas_and_deferred_with_them(client, operator_user):
    created = create(client).json()
    assert client.delete(f"{URL}{created['id']}/").status_code == 204
    deployment = bare_deployment(operator_user, "busy", gguf_variant())
    Replica.objects.create(
        deployment=deployment,
        revision=deployment.current_revision,
        slot=0,
        node=node("n1"),
        state=ReplicaState.AVAILABLE,
        container_name="fleet-busy-r1-s0-1",
    )
    response = client.delete(f"{URL}{deployment.pk}/")
    assert response.status_code == 202
    assert response.json()["status"] == "deleting"


def _with_replicas(user, name: str, count: int) -> Deployment:
    deployment = bare_deployment(user, name, gguf_variant(), replicas=count)
    host = node(f"{name}-node")
    for slot in range(count):
        Replica.objects.create(
            deployment=deployment,
            revision=deployment.current_revision,
            slot=slot,
            node=host,
            host_port=20000 + slot,
            state=ReplicaState.AVAILABLE,
        )
    Rollout.objects.create(
        deployment=deployment, to_revision=deployment.current_revision, state="succeeded"
    )
    return deployment


def test_list_shows_status_ready_nodes_and_endpoints(client, operator_user):
    _with_replicas(operator_user, "alpha", 2)
    stopped = deploy(operator_user, "beta", gguf_variant())
    services.stop(ChangeContext.for_user(operator_user), stopped)
    rows = {r["name"]: r for r in client.get(URL).json()["results"]}
    alpha = rows["alpha"]
    assert alpha["status"] == "available"
    assert (alpha["ready_replicas"], alpha["desired_replicas"]) == (2, 2)
    assert alpha["nodes"] == ["alpha-node"]
    assert alpha["endpoints"] == [
        "http://alpha-node.example.net:20000",
        "http://alpha-node.example.net:20001",
    ]
    assert rows["beta"]["status"] == "stopped"
    only = client.get(URL, {"status": "stopped"}).json()["results"]
    assert [r["name"] for r in only] == ["beta"]
    on_node = client.get(URL, {"node": "alpha-node"}).json()["results"]
    assert [r["name"] for r in on_node] == ["alpha"]


def test_status_in_sql_matches_the_models_get_status(operator_user):
    from deployments import queries

    failing = _with_replicas(operator_user, "failing", 1)
    Rollout.objects.create(
        deployment=failing, to_revision=failing.current_revision, state=RolloutState.FAILED
    )
    deploy(operator_user, "fresh", gguf_variant())
    degraded = _with_replicas(operator_user, "degraded", 2)
    Replica.objects.filter(deployment=degraded, slot=1).update(state=ReplicaState.HEALTHY)
    _with_replicas(operator_user, "fine", 1)
    seen = {}
    for d in queries.deployments():
        seen[d.name] = d.status
        assert d.status == d.get_status(d.ready_count, d.up_to_date_count, d.rollout_state)
        one = queries.deployment(d.pk)  # what a change answers: counted in Python
        fields = ("status", "ready_count", "up_to_date_count", "rollout_state")
        assert [getattr(one, f) for f in fields] == [getattr(d, f) for f in fields], d.name
    assert seen == {
        "degraded": "degraded",
        "failing": "failed",
        "fine": "available",
        "fresh": "progressing",
    }


def test_list_query_count_does_not_grow_with_rows(client, operator_user):
    _with_replicas(operator_user, "one", 1)
    with CaptureQueriesContext(connection) as few:
        assert client.get(URL).status_code == 200
    for index in range(4):
        _with_replicas(operator_user, f"more-{index}", 2)
    with CaptureQueriesContext(connection) as many:
        assert len(client.get(URL).json()["results"]) == 5
    assert len(many) == len(few)


def test_replicas_and_rollouts_are_read_only_lists_with_filters(client, operator_user):
    alpha = _with_replicas(operator_user, "alpha", 2)
    _with_replicas(operator_user, "beta", 1)
    rows = client.get("/api/v1/replicas/", {"deployment": alpha.pk}).json()["results"]
    assert [(r["deployment_name"], r["slot"], r["revision"]) for r in rows] == [
        ("alpha", 0, 1),
        ("alpha", 1, 1),
    ]
    assert rows[0]["endpoint"] == "http://alpha-node.example.net:20000"
    assert client.get("/api/v1/replicas/", {"state": "failed"}).json()["results"] == []
    assert client.post("/api/v1/replicas/", {}, format="json").status_code == 405
    rollouts = client.get("/api/v1/rollouts/", {"deployment_name": "beta"}).json()["results"]
    assert [(r["deployment_name"], r["to_revision"], r["state"]) for r in rollouts] == [
        ("beta", 1, "succeeded")
    ]
