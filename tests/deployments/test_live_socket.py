"""Deployment pages' live socket (/ws/deployments/) on the real ASGI app and Redis layer.

A reconcile pass that places a replica, and the agent's health report, reach a viewer who
subscribed to that deployment; the list group hears one notice per changed deployment; a
deployment nobody subscribed to stays silent on the detail group; sockets without a session
are refused before accept, and viewers cannot act through the socket.
"""

from __future__ import annotations

import random

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection

from config.asgi import application
from tests.core.test_consumers import ORIGIN, session_cookie_for
from tests.deployments.builders import gguf_variant, holds
from tests.deployments.test_reconciler_db import deploy, scale

pytestmark = pytest.mark.django_db(transaction=True)


def socket(*headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, "/ws/deployments/", headers=[(b"host", b"localhost"), *headers]
    )


async def messages_until(communicator, predicate, *, timeout: float = 5.0) -> list[dict]:
    """Messages received until one matches (other writers may share this Redis)."""
    seen = []
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        seen.append(message)
        if predicate(message):
            return seen


async def test_a_socket_without_a_session_is_refused():
    connected, code = await socket(ORIGIN).connect()
    assert connected is False
    assert code == 4401


@database_sync_to_async
def spread_deployment_ids() -> None:
    """Channels groups are Redis pub/sub channels, shared by every database on the server: start
    this test's deployment ids at a random offset so another run's ``deployment.1`` is not ours."""
    base = random.randrange(10**6, 10**9)  # noqa: S311 - spreading ids, not a secret
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('deployments_deployment', 'id'), %s, false)",
            [base],
        )


async def test_viewer_follows_a_deployment_rollout_live(fleet, viewer_user, admin_user):
    await spread_deployment_ids()
    variant = await database_sync_to_async(gguf_variant)(size=50_000_000)
    node = await database_sync_to_async(fleet.node)("node-live")
    await database_sync_to_async(holds)(node, variant)
    # no replicas yet: a change runs its own pass, so the replicas come with the scale below
    watched = await database_sync_to_async(deploy)(admin_user, variant, "watched", replicas=0)
    other = await database_sync_to_async(deploy)(admin_user, variant, "other", replicas=0)

    cookie = await session_cookie_for(viewer_user)
    communicator = socket(ORIGIN, (b"cookie", cookie))
    assert (await communicator.connect())[0]
    try:
        await communicator.send_json_to({"subscribe": f"deployment.{watched.pk}"})
        reply = await communicator.receive_json_from(timeout=5)
        assert reply == {"type": "subscribed", "payload": {"group": f"deployment.{watched.pk}"}}

        # A change of the other deployment: only the list notice reaches this socket.
        await database_sync_to_async(scale)(other, 1)
        seen = await messages_until(
            communicator,
            lambda m: m["type"] == "deployments.changed" and m["payload"]["id"] == other.pk,
        )
        assert not [m for m in seen if m["type"].startswith("deployment.")]

        # Scaling the watched one: its replica is placed and ordered to start.
        await database_sync_to_async(scale)(watched, 1)
        sent = await database_sync_to_async(fleet.step)(0, watched)
        seen = await messages_until(
            communicator,
            lambda m: m["type"] == "deployment.replica" and m["payload"]["state"] == "starting",
        )
        replica = seen[-1]["payload"]
        assert replica["deployment"] == watched.pk
        assert replica["node"] == node.pk

        # The agent reports it healthy: that reaches the page too.
        await database_sync_to_async(fleet.act)(
            [order for order in sent if order.replica_id == replica["id"]]
        )
        await messages_until(
            communicator,
            lambda m: (
                m["type"] == "deployment.replica"
                and m["payload"]["id"] == replica["id"]
                and m["payload"]["state"] == "healthy"
            ),
        )
    finally:
        await communicator.disconnect()


async def test_only_deployment_groups_can_be_joined_and_viewers_cannot_act(viewer_user):
    cookie = await session_cookie_for(viewer_user)
    communicator = socket(ORIGIN, (b"cookie", cookie))
    assert (await communicator.connect())[0]
    try:
        for group in ("node.1", "deployments.1", "deployment.x", "history"):
            await communicator.send_json_to({"subscribe": group})
            reply = await communicator.receive_json_from(timeout=5)
            assert reply["type"] == "error", group
        await communicator.send_json_to({"action": "delete", "deployment": 1})
        assert (await communicator.receive_json_from(timeout=5))["type"] == "error"
    finally:
        await communicator.disconnect()
