"""Try it: one completion from the control plane to a replica (a stub server plays it)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from core.errors import ConflictError, ServiceError
from deployments import try_it
from deployments.choices import ReplicaState
from deployments.models import Deployment, Replica
from tests.deployments.builders import deploy, gguf_variant, node

pytestmark = pytest.mark.django_db


class Stub(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []
    status = 200

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Stub.seen.append({"path": self.path, "body": body})
        payload = json.dumps(
            {
                "choices": [{"text": " there"}],
                "usage": {"prompt_tokens": 2, "completion_tokens": body["max_tokens"]},
            }
        ).encode()
        self.send_response(Stub.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    Stub.seen, Stub.status = [], 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def serving(deployment: Deployment, port: int, **fields: Any) -> Replica:
    where = fields.pop("node", None) or node(f"try-node-{port}-{fields.get('slot', 0)}")
    return Replica.objects.create(
        deployment=deployment,
        revision=deployment.current_revision,
        slot=fields.pop("slot", 0),
        node=where,
        state=fields.pop("state", ReplicaState.AVAILABLE),
        host_port=port,
        **fields,
    )


@pytest.fixture
def deployment(admin_user) -> Deployment:
    return deploy(admin_user, "try-demo", gguf_variant())


def test_completion_with_tokens_and_timings(deployment: Deployment, stub: int) -> None:
    replica = serving(deployment, stub)
    result = try_it.try_completion(deployment, "Hello", 5)
    assert result.replica == replica.pk and result.text == " there"
    assert (result.prompt_tokens, result.completion_tokens) == (2, 5)
    assert 0 < result.ttfb_ms <= result.total_ms
    assert result.url == f"http://127.0.0.1:{stub}/v1/completions"
    assert Stub.seen == [
        {
            "path": "/v1/completions",
            "body": {"prompt": "Hello", "max_tokens": 5, "stream": False, "model": "try-demo"},
        }
    ]


def test_node_address_from_the_inventory(deployment: Deployment, stub: int) -> None:
    replica = serving(deployment, stub)
    assert try_it.node_address(replica) == "127.0.0.1"
    replica.node.inventory = {"host": {"hostname": "x", "address": "10.1.2.3"}}
    assert try_it.node_address(replica) == "10.1.2.3"


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "message"),
    [
        ("", 5, "Write a prompt"),
        ("x" * 8193, 5, "over 8 KB"),
        ("é" * 4097, 5, "over 8 KB"),  # bytes, not characters
        ("Hi", 0, "between 1 and 512"),
        ("Hi", 513, "between 1 and 512"),
    ],
)
def test_refused_requests(deployment: Deployment, prompt: str, max_tokens: int, message: str):
    with pytest.raises(ServiceError, match=message):
        try_it.try_completion(deployment, prompt, max_tokens)


def test_no_serving_replica(deployment: Deployment, stub: int) -> None:
    serving(deployment, stub, state=ReplicaState.STARTING)
    with pytest.raises(ConflictError, match="no serving replica"):
        try_it.try_completion(deployment, "Hi", 2)


def test_a_named_replica_must_serve_and_belong(deployment: Deployment, stub: int, admin_user):
    serving(deployment, stub)
    other = deploy(admin_user, "try-other", deployment.current_revision.variant)
    foreign = serving(other, stub, slot=1)
    with pytest.raises(ConflictError, match="is not serving"):
        try_it.try_completion(deployment, "Hi", 2, replica=foreign.pk)


def test_unreachable_and_failing_replicas(deployment: Deployment, stub: int) -> None:
    replica = serving(deployment, 1)  # nothing listens on port 1
    with pytest.raises(ServiceError, match="Could not reach the replica"):
        try_it.try_completion(deployment, "Hi", 2)
    Replica.objects.filter(pk=replica.pk).update(host_port=stub)
    Stub.status = 500
    with pytest.raises(ServiceError, match="answered HTTP 500"):
        try_it.try_completion(deployment, "Hi", 2)


def test_custom_runtime_is_not_supported(deployment: Deployment, stub: int) -> None:
    replica = serving(deployment, stub)
    type(replica.revision).objects.filter(pk=replica.revision_id).update(runtime="custom")
    with pytest.raises(ServiceError, match="not supported for custom images"):
        try_it.try_completion(deployment, "Hi", 2)


def test_page_and_api(client, api_client_for, operator_user, deployment, stub: int) -> None:
    serving(deployment, stub)
    client.force_login(operator_user)
    page = client.post(f"/deployments/{deployment.pk}/try/", {"prompt": "Hi", "max_tokens": "3"})
    assert page.status_code == 200 and b" there" in page.content and b"total" in page.content
    refused = client.post(f"/deployments/{deployment.pk}/try/", {"prompt": "Hi", "max_tokens": "0"})
    assert refused.status_code == 400 and b"between 1 and 512" in refused.content
    api = api_client_for("operator")
    body = api.post(
        f"/api/v1/deployments/{deployment.pk}/try/",
        {"prompt": "Hi", "max_tokens": 4},
        format="json",
    ).json()
    assert body["completion_tokens"] == 4 and body["total_ms"] >= body["ttfb_ms"] > 0
    viewer = api_client_for("viewer")
    response = viewer.post(f"/api/v1/deployments/{deployment.pk}/try/", {"prompt": "Hi"})
    assert response.status_code == 403
