"""A lean ASGI handler for agent heartbeats, in front of Django.

At fleet scale heartbeats are most of the traffic (10,000 nodes every 10 s = 1,000/s), so they
skip Django's middleware stack: this handler reads the body, validates it, and hands the row
to a batcher that writes every heartbeat that arrived meanwhile with a constant number of
queries (see fleet.heartbeats). Each request is answered after its batch is committed.
"""

from __future__ import annotations

from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from fleet.asgi_agent import (
    LoopBatchers,
    WriteBatcher,
    bearer,
    headers_of,
    read_body,
    request_id,
    respond,
)
from fleet.heartbeats import HeartbeatResult, HeartbeatRow, ingest_batch, prepare

HEARTBEAT_PATH = "/api/v1/agent/heartbeat/"
MAX_BATCH = 500


def _write(rows: list[HeartbeatRow]) -> tuple[list[HeartbeatResult], None]:
    close_old_connections()
    return ingest_batch(rows), None


batchers: LoopBatchers[HeartbeatRow, HeartbeatResult] = LoopBatchers(
    lambda: WriteBatcher("heartbeats", _write, max_batch=MAX_BATCH)
)


async def handle(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from django.conf import settings

    received_at = timezone.now()
    headers = headers_of(scope)
    rid = request_id(headers)
    if scope["method"] != "POST":
        await respond(send, 405, {"detail": "Use POST.", "code": "method_not_allowed"}, rid)
        return
    body = await read_body(receive, settings.FLEET_HEARTBEAT_MAX_BYTES)
    if body is None:
        return
    credential = bearer(headers)
    prepared = prepare(credential, body, received_at, rid)
    if isinstance(prepared, HeartbeatResult):
        await respond(send, prepared.status, prepared.body, rid)
        return
    try:
        result = await batchers.get().submit(prepared)
    except Exception:
        result = HeartbeatResult(
            503,
            {
                "detail": "The control plane could not store the heartbeat; retry.",
                "code": "unavailable",
            },
        )
    await respond(send, result.status, result.body, rid)


def wrap(django_app: Any) -> Any:
    """An ASGI app sending heartbeats to :func:`handle` and everything else to Django."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == HEARTBEAT_PATH:
            await handle(scope, receive, send)
            return
        await django_app(scope, receive, send)

    return app
