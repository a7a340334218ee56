"""What the ASGI fast paths of agent endpoints share (heartbeats, replica reports, metric
batches): the request id, the node credential, the body read up to a limit, a JSON answer,
and the batcher that writes what arrives meanwhile together."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

Headers = dict[bytes, bytes]


def headers_of(scope: dict[str, Any]) -> Headers:
    return dict(scope.get("headers") or [])


def request_id(headers: Headers) -> str:
    """The caller's X-Request-Id (cut to 64 characters), else a new one."""
    return headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex


def bearer(headers: Headers) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None without one."""
    parts = headers.get(b"authorization", b"").decode("latin-1").split()
    return parts[1] if len(parts) == 2 and parts[0].lower() == "bearer" else None


async def read_body(receive: Any, limit: int) -> bytes | None:
    """The body, cut to ``limit + 1`` bytes (a longer one still reads as too large); None
    when the client went away."""
    chunks: list[bytes] = []
    kept = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if kept <= limit:
            piece = chunk[: limit + 1 - kept]
            chunks.append(piece)
            kept += len(piece)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(
    send: Any,
    status: int,
    body: dict[str, Any],
    request_id: str,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """A JSON answer, never cached; a 401 names the agent realm."""
    raw = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
        (b"x-request-id", request_id.encode()),
        (b"cache-control", b"no-store"),
        *extra_headers,
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="agent"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


class WriteBatcher(Generic[T, R]):
    """Gathers the items that arrive while a write is in flight and writes them together.

    ``write(items)`` runs on one thread (so one database connection) and returns each item's
    result, in order, and something for ``after``, which runs on the event loop once the
    submitters are answered. A write that raises answers every submitter with its exception.
    """

    def __init__(
        self,
        name: str,
        write: Callable[[list[T]], tuple[list[R], Any]],
        *,
        max_batch: int,
        after: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.write = write
        self.max_batch = max_batch
        self.after = after
        self.queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())
        future: asyncio.Future[R] = loop.create_future()
        await self.queue.put((item, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                results, extra = await loop.run_in_executor(
                    self.executor, self.write, [item for item, _ in batch]
                )
            except Exception as exc:
                log.exception("%s batch of %d failed", self.name, len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
            if self.after is not None:
                await self.after(extra)

    async def close(self) -> None:
        """Stop the writer task, close its thread's database connections, end the thread."""
        from django.db import connections

        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await asyncio.get_running_loop().run_in_executor(self.executor, connections.close_all)
        self.executor.shutdown(wait=True)


class LoopBatchers(Generic[T, R]):
    """One :class:`WriteBatcher` per event loop (a batcher's queue and task belong to one)."""

    def __init__(self, make: Callable[[], WriteBatcher[T, R]]) -> None:
        self.make = make
        self.by_loop: dict[int, WriteBatcher[T, R]] = {}

    def get(self) -> WriteBatcher[T, R]:
        loop_id = id(asyncio.get_running_loop())
        if loop_id not in self.by_loop:
            self.by_loop[loop_id] = self.make()
        return self.by_loop[loop_id]

    async def close_all(self) -> None:
        for batcher in list(self.by_loop.values()):
            await batcher.close()
        self.by_loop.clear()
