"""WebSockets on the real ASGI app with the Redis channel layer."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings

from config.asgi import application
from core import services
from core.history import ChangeContext

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://localhost")


@database_sync_to_async
def session_cookie_for(user) -> bytes:
    from django.test import Client

    client = Client()
    client.force_login(user)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return f"{settings.SESSION_COOKIE_NAME}={value}".encode()


def socket(*headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, "/ws/history/", headers=[(b"host", b"localhost"), *headers]
    )


def test_the_channel_layer_is_redis():
    assert type(get_channel_layer()).__module__.startswith("channels_redis")


async def test_unauthenticated_socket_is_refused_before_accept():
    connected, _ = await socket(ORIGIN).connect()
    assert connected is False


async def test_foreign_origin_is_refused(viewer_user):
    cookie = await session_cookie_for(viewer_user)
    connected, _ = await socket((b"origin", b"http://evil.example"), (b"cookie", cookie)).connect()
    assert connected is False


async def test_viewer_receives_new_history_events_live(viewer_user, operator_user):
    cookie = await session_cookie_for(viewer_user)
    communicator = socket(ORIGIN, (b"cookie", cookie))
    connected, _ = await communicator.connect()
    assert connected is True
    try:
        await database_sync_to_async(services.create_secret)(
            ChangeContext.for_user(operator_user, reason="live"), name="live-secret", value="v"
        )
        # Skip events of other writers sharing this Redis (concurrent test runs).
        message = await communicator.receive_json_from(timeout=5)
        while message["payload"].get("target_name") != "live-secret":
            message = await communicator.receive_json_from(timeout=5)
        assert message["type"] == "history.event"
        assert message["payload"]["target_name"] == "live-secret"
        assert message["payload"]["reason"] == "live"
        assert message["payload"]["actor_name"] == "oscar"
    finally:
        await communicator.disconnect()


async def test_viewers_watch_but_cannot_act(viewer_user):
    cookie = await session_cookie_for(viewer_user)
    communicator = socket(ORIGIN, (b"cookie", cookie))
    assert (await communicator.connect())[0]
    try:
        await communicator.send_json_to({"subscribe": "node.1"})
        reply = await communicator.receive_json_from(timeout=5)
        assert reply["type"] == "error"
    finally:
        await communicator.disconnect()


async def test_a_deactivated_user_cannot_connect(viewer_user):
    cookie = await session_cookie_for(viewer_user)
    viewer_user.is_active = False
    await database_sync_to_async(viewer_user.save)()
    connected, _ = await socket(ORIGIN, (b"cookie", cookie)).connect()
    assert connected is False
