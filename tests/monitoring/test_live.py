"""Live points over the real ASGI app and the Redis channel layer (WebsocketCommunicator).

A viewer watching one deployment gets that deployment's points, numbered without gaps, and
nothing of another deployment; a group naming nothing that exists cannot be joined;
sockets without a session, from a foreign origin or of a deactivated user are refused
before accept; nothing sent on the socket acts.
"""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from core.models import User
from tests.core.test_consumers import ORIGIN, session_cookie_for
from tests.fleet.test_nodes_asgi import call
from tests.monitoring.support import (
    batch,
    deployment,
    joined_node,
    now_ms,
    replica_on,
    round_,
    variant,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("metrics_fastpath"),
]


def socket(*headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, "/ws/metrics/", headers=[(b"host", b"localhost"), *headers]
    )


@database_sync_to_async
def world(admin_user):
    node, credential = joined_node("live-a")
    gguf = variant()
    seen, hidden = deployment(admin_user, "seen", gguf), deployment(admin_user, "hidden", gguf)
    return node, credential, seen, hidden, replica_on(node, seen, 0), replica_on(node, hidden, 1)


async def points_for(communicator, group: str, *, timeout: float = 5.0) -> dict:
    """The next metrics message of ``group`` (other writers may share this Redis)."""
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        if message["type"] == "metrics.points" and message["payload"]["group"] == group:
            return message["payload"]


async def test_a_viewer_sees_live_points_of_the_deployment_it_watches_only(admin_user, viewer_user):
    node, credential, seen, _hidden, mine, other = await world(admin_user)
    communicator = socket(ORIGIN, (b"cookie", await session_cookie_for(viewer_user)))
    assert (await communicator.connect())[0]
    try:
        group = f"deployment.{seen.pk}"
        await communicator.send_json_to({"subscribe": group})
        assert await communicator.receive_json_from(timeout=5) == {
            "type": "subscribed",
            "payload": {"group": group},
        }
        await communicator.send_json_to({"subscribe": "deployment.999999999"})
        refused = await communicator.receive_json_from(timeout=5)
        assert refused["type"] == "error"

        sequence = []
        for step in range(3):
            body = batch(
                round_(
                    now_ms(step * 0.01),
                    replicas=[
                        (mine.pk, {"generated_tokens_per_s": 10.0 + step}),
                        (other.pk, {"generated_tokens_per_s": 99.0}),
                    ],
                )
            )
            answer = await call(
                "POST",
                "/api/v1/agent/metrics/",
                body=json.dumps(body).encode(),
                credential=credential,
            )
            assert answer.status == 200, answer.body
            payload = await points_for(communicator, group)
            sequence.append(payload["seq"])
            replicas = {row[3] for row in payload["points"]}
            assert replicas == {mine.pk}
            (row,) = payload["points"]
            assert row[4] == "generated_tokens_per_s" and row[7] == 10.0 + step
            assert row[2] == seen.pk and row[1] == node.pk
        assert sequence == list(range(sequence[0], sequence[0] + 3))  # no gap
        # nothing of the hidden deployment ever arrived
        assert await communicator.receive_nothing(timeout=0.5)

        await communicator.send_json_to({"action": "stop", "deployment": seen.pk})
        assert (await communicator.receive_json_from(timeout=5))["type"] == "error"
    finally:
        await communicator.disconnect()


async def test_sockets_are_refused_before_accept(admin_user, viewer_user):
    await world(admin_user)
    anonymous = await socket(ORIGIN).connect()
    assert anonymous == (False, 4401)

    cookie = await session_cookie_for(viewer_user)
    foreign = await socket((b"origin", b"http://evil.example"), (b"cookie", cookie)).connect()
    assert foreign[0] is False

    await database_sync_to_async(User.objects.filter(pk=viewer_user.pk).update)(is_active=False)
    deactivated = await socket(ORIGIN, (b"cookie", cookie)).connect()
    assert deactivated[0] is False
