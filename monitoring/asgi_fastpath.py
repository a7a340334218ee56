"""A lean ASGI handler for agents' metric batches, in front of Django.

Like heartbeats (``fleet.asgi_fastpath``), metric batches are most of the agent traffic, so
they skip Django's middleware: the handler reads the body and hands it to a batcher whose
one writer thread stores every batch that arrived meanwhile in one transaction
(``monitoring.receive``). After the write, the points go to the browsers from the event
loop (``monitoring.live``), and each request is answered.
"""

from __future__ import annotations

from typing import Any

from fleet.asgi_agent import (
    LoopBatchers,
    WriteBatcher,
    bearer,
    headers_of,
    read_body,
    request_id,
    respond,
)
from monitoring.ingest import LivePoint
from monitoring.receive import Answer, receive_many

METRICS_PATH = "/api/v1/agent/metrics/"
MAX_BATCH = 200
UNAVAILABLE = Answer(
    503, {"detail": "The control plane could not store the metrics; retry.", "code": "unavailable"}
)


async def _publish(points: list[LivePoint]) -> None:
    from monitoring.live import publish_async  # after the agents have their answers

    await publish_async(points)


batchers: LoopBatchers[tuple[str | None, bytes], Answer] = LoopBatchers(
    lambda: WriteBatcher("metrics", receive_many, max_batch=MAX_BATCH, after=_publish)
)


async def handle(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from django.conf import settings

    headers = headers_of(scope)
    rid = request_id(headers)
    if scope["method"] != "POST":
        await respond(send, 405, {"detail": "Use POST.", "code": "method_not_allowed"}, rid)
        return
    body = await read_body(receive, settings.FLEET_METRICS_MAX_BYTES)
    if body is None:
        return
    try:
        answer = await batchers.get().submit((bearer(headers), body))
    except Exception:
        answer = UNAVAILABLE
    await respond(send, answer.status, answer.body, rid)


def wrap(app: Any) -> Any:
    """An ASGI app sending metric batches to :func:`handle` and everything else to ``app``."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == METRICS_PATH:
            await handle(scope, receive, send)
            return
        await app(scope, receive, send)

    return wrapped
