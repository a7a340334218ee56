"""The heartbeat ASGI fast path, driven through ``config.asgi.application`` itself.

No HTTP server: each request is an ASGI scope with ``receive``/``send`` callables, as uvicorn
would call the app. The fast path writes from its own thread, so the database is transactional.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import connections

from config.asgi import application
from core.history import ChangeContext
from fleet import asgi_fastpath, services
from fleet.choices import NodeState
from fleet.models import Node
from tests.fleet.agents import heartbeat_payload

pytestmark = pytest.mark.django_db(transaction=True)

HEARTBEAT = "/api/v1/agent/heartbeat/"


class Answer:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        start = next(m for m in messages if m["type"] == "http.response.start")
        self.status: int = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
        self.body = b"".join(
            m.get("body", b"") for m in messages if m["type"] == "http.response.body"
        )

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    method: str,
    path: str = HEARTBEAT,
    *,
    body: bytes = b"",
    credential: str | None = None,
    chunk_size: int | None = None,
) -> Answer:
    headers = [(b"host", b"localhost"), (b"content-type", b"application/json")]
    if credential is not None:
        headers.append((b"authorization", f"Bearer {credential}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("localhost", 80),
    }
    size = chunk_size or max(len(body), 1)
    chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    incoming = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    done = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    await asyncio.wait_for(application(scope, receive, send), timeout=30)
    return Answer(sent)


def beat_body(**overrides: Any) -> bytes:
    return json.dumps(heartbeat_payload(**overrides)).encode()


@pytest.fixture
async def fastpath():
    """Stop this loop's batcher after the test and close its thread's database connection."""
    yield
    await asgi_fastpath.batchers.close_all()
    await database_sync_to_async(connections.close_all)()


@pytest.fixture
def make_nodes(db, operator_user):
    def make(count: int, prefix: str = "fast") -> list[tuple[int, str]]:
        ctx = ChangeContext.for_user(operator_user)
        _, key = services.create_join_token(ctx, name="asgi", max_uses=count)
        out = []
        for index in range(count):
            node, credential = services.join_node(join_key=key, name=f"{prefix}-{index:02d}")
            out.append((node.pk, credential))
        return out

    return database_sync_to_async(make)


@database_sync_to_async
def node_row(pk: int) -> Node:
    return Node.objects.get(pk=pk)


async def test_heartbeat_with_a_real_credential_makes_the_node_ready(make_nodes, fastpath):
    [(pk, credential)] = await make_nodes(1)

    answer = await call("POST", body=beat_body(), credential=credential)

    assert answer.status == 200, answer.body
    assert answer.json()["node_id"] == pk
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"]
    node = await node_row(pk)
    assert node.state == NodeState.READY
    assert node.last_heartbeat_at is not None
    assert node.inventory["host"]["hostname"] == "host-a"


async def test_bad_credentials_and_methods_are_refused(make_nodes, fastpath):
    [(pk, credential)] = await make_nodes(1)

    unknown = await call("POST", body=beat_body(), credential="slmn_" + "Q" * 43)
    assert unknown.status == 401
    assert unknown.json()["code"] == "node_credential_invalid"
    assert unknown.headers["www-authenticate"] == 'Bearer realm="agent"'
    missing = await call("POST", body=beat_body())
    assert missing.status == 401 and missing.json()["code"] == "not_authenticated"
    wrong_method = await call("GET", credential=credential)
    assert wrong_method.status == 405
    assert (await call("PUT", body=beat_body(), credential=credential)).status == 405

    node = await node_row(pk)
    assert node.state == NodeState.PENDING and node.last_heartbeat_at is None


async def test_malformed_heartbeats_are_400_and_change_nothing(make_nodes, fastpath):
    [(pk, credential)] = await make_nodes(1)
    for body in (b"{nope", beat_body(memory={"total_bytes": -1}), beat_body(gpus=[{}] * 65)):
        answer = await call("POST", body=body, credential=credential)
        assert answer.status == 400, (body[:40], answer.body)
    node = await node_row(pk)
    assert node.state == NodeState.PENDING and node.last_heartbeat_at is None


@pytest.mark.parametrize("chunk_size", [None, 65536], ids=["one-message", "64k-chunks"])
async def test_oversized_heartbeat_is_413(make_nodes, fastpath, settings, chunk_size):
    [(pk, credential)] = await make_nodes(1)
    body = beat_body() + b" " * settings.FLEET_HEARTBEAT_MAX_BYTES  # valid JSON, too big

    answer = await call("POST", body=body, credential=credential, chunk_size=chunk_size)

    assert answer.status == 413, (answer.status, answer.body[:300])
    assert answer.json()["code"] == "too_large"
    node = await node_row(pk)
    assert node.last_heartbeat_at is None


async def test_other_paths_still_go_to_django(make_nodes, fastpath):
    [(_, credential)] = await make_nodes(1)
    answer = await call("GET", "/api/v1/nodes/", credential=credential)
    assert answer.status == 401  # Django + DRF answered, and refused the node credential
    assert "detail" in answer.json()


async def test_fifty_concurrent_heartbeats_from_fifty_nodes_are_all_stored(
    make_nodes, fastpath, monkeypatch
):
    nodes = await make_nodes(50, "many")
    batch_sizes: list[int] = []
    real_ingest = asgi_fastpath.ingest_batch

    def counting_ingest(rows):
        batch_sizes.append(len(rows))
        return real_ingest(rows)

    monkeypatch.setattr(asgi_fastpath, "ingest_batch", counting_ingest)

    answers = await asyncio.gather(
        *(call("POST", body=beat_body(), credential=credential) for _, credential in nodes)
    )

    assert [a.status for a in answers] == [200] * 50, [a.body for a in answers if a.status != 200]
    assert sorted(a.json()["node_id"] for a in answers) == sorted(pk for pk, _ in nodes)
    for (pk, _), answer in zip(nodes, answers, strict=True):
        assert answer.json()["node_id"] == pk  # each request got its own node's answer

    @database_sync_to_async
    def stored() -> tuple[int, int]:
        ids = [pk for pk, _ in nodes]
        ready = Node.objects.filter(pk__in=ids, state=NodeState.READY)
        return ready.count(), ready.filter(last_heartbeat_at__isnull=False).count()

    assert await stored() == (50, 50)
    assert sum(batch_sizes) == 50
    assert len(batch_sizes) < 50, f"no batching happened: {batch_sizes}"
