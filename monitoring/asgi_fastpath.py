"""A lean ASGI handler for agents' metric batches, in front of Django.

Like heartbeats (``fleet.asgi_fastpath``), metric batches are most of the agent traffic, so
they skip Django's middleware: the handler reads the body and hands it to a batcher whose
one writer thread stores every batch that arrived meanwhile in one transaction
(``monitoring.receive``). After the write, the points go to the browsers from the event
loop (``monitoring.live``), and each request is answered.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fleet.asgi_agent import bearer, headers_of, read_body, request_id, respond
from monitoring.receive import Answer, receive_many

log = logging.getLogger(__name__)

METRICS_PATH = "/api/v1/agent/metrics/"
MAX_BATCH = 200
UNAVAILABLE = Answer(
    503, {"detail": "The control plane could not store the metrics; retry.", "code": "unavailable"}
)


class Batcher:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str | None, bytes, asyncio.Future[Answer]]] = (
            asyncio.Queue()
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics")
        self.task: asyncio.Task[None] | None = None

    async def submit(self, credential: str | None, body: bytes) -> Answer:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())
        future: asyncio.Future[Answer] = loop.create_future()
        await self.queue.put((credential, body, future))
        return await future

    async def _run(self) -> None:
        from monitoring.live import publish_async

        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            requests = [(credential, body) for credential, body, _ in batch]
            try:
                answers, points = await loop.run_in_executor(self.executor, receive_many, requests)
            except Exception:
                log.exception("metrics batch of %d requests failed", len(batch))
                answers, points = [UNAVAILABLE] * len(batch), []
            for (_, _, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)
            await publish_async(points)


_batchers: dict[int, Batcher] = {}


def batcher() -> Batcher:
    loop_id = id(asyncio.get_running_loop())
    if loop_id not in _batchers:
        _batchers[loop_id] = Batcher()
    return _batchers[loop_id]


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
    answer = await batcher().submit(bearer(headers), body)
    await respond(send, answer.status, answer.body, rid)


def wrap(app: Any) -> Any:
    """An ASGI app sending metric batches to :func:`handle` and everything else to ``app``."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == METRICS_PATH:
            await handle(scope, receive, send)
            return
        await app(scope, receive, send)

    return wrapped
