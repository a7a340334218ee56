"""A lean ASGI handler for agent heartbeats, in front of Django.

At fleet scale heartbeats are most of the traffic (10,000 nodes every 10 s = 1,000/s), so they
skip Django's middleware stack: this handler reads the body, validates it, and hands the row
to a batcher that writes every heartbeat that arrived meanwhile with a constant number of
queries (see fleet.heartbeats). Each request is answered after its batch is committed.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from fleet.asgi_agent import bearer, headers_of, read_body, request_id, respond
from fleet.heartbeats import HeartbeatResult, HeartbeatRow, ingest_batch, prepare

log = logging.getLogger(__name__)

HEARTBEAT_PATH = "/api/v1/agent/heartbeat/"
MAX_BATCH = 500


class Batcher:
    """Gathers rows while a write is in flight; one writer thread keeps one DB connection."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[HeartbeatRow, asyncio.Future[HeartbeatResult]]] = (
            asyncio.Queue()
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heartbeats")
        self.task: asyncio.Task[None] | None = None

    async def submit(self, row: HeartbeatRow) -> HeartbeatResult:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future[HeartbeatResult] = asyncio.get_running_loop().create_future()
        await self.queue.put((row, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            rows = [row for row, _ in batch]
            try:
                results = await loop.run_in_executor(self.executor, _write, rows)
            except Exception as exc:
                log.exception("heartbeat batch of %d failed", len(rows))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _write(rows: list[HeartbeatRow]) -> list[HeartbeatResult]:
    close_old_connections()
    return ingest_batch(rows)


_batchers: dict[int, Batcher] = {}


def batcher() -> Batcher:
    loop_id = id(asyncio.get_running_loop())
    if loop_id not in _batchers:
        _batchers[loop_id] = Batcher()
    return _batchers[loop_id]


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
        result = await batcher().submit(prepared)
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
