"""The one producer of live messages for browsers (Channels groups).

Groups: ``history`` (every new history event), ``fleet`` (summary changes), and
per-resource groups (``node.<id>``, ``deployment.<id>``, ``job.<id>``) added by later apps.
A failing channel layer never fails the change that triggered the message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger(__name__)

HISTORY_GROUP = "history"
FLEET_GROUP = "fleet"
JOBS_GROUP = "jobs"  # every job's transitions (progress goes to job.<id>, node.<id>, …)
DEPLOYMENTS_GROUP = "deployments"  # one notice per changed deployment (details: deployment.<id>)


class LiveMessage(TypedDict):
    type: str  # the consumer handler, e.g. "history.event" -> history_event()
    payload: dict[str, Any]


def send(group: str, message_type: str, payload: dict[str, Any]) -> None:
    """Send to a group without waiting for it (live updates are never on a change's path).

    With a network channel layer (Redis) a per-process publisher thread sends the messages in
    the order given; the in-memory layer of the embedded mode belongs to the web server's
    event loop, so there the send happens in place.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    message: LiveMessage = {"type": message_type, "payload": payload}
    if isinstance(layer, InMemoryChannelLayer):
        _send_now(layer, group, message)
    else:
        _publisher.submit(layer, group, message)


def _send_now(layer: Any, group: str, message: LiveMessage) -> None:
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # the change is committed; a lost live update is resynced by the page
        log.warning("live update to group %s failed", group, exc_info=True)


class _Publisher:
    """An event loop in a daemon thread that sends queued messages one after another.

    ``async_to_sync`` from a worker or request thread starts an event loop per call (several
    ms each, and on the critical path of a replica start before). Here a call only queues.
    The queue is bounded: when the channel layer cannot keep up, new messages are dropped
    with a warning (pages resync from the server). Recreated after a fork (Celery's pool).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[Any, str, LiveMessage]] | None = None

    def submit(self, layer: Any, group: str, message: LiveMessage) -> None:
        loop, queue = self._ensure()
        loop.call_soon_threadsafe(self._put, queue, (layer, group, message))

    @staticmethod
    def _put(
        queue: asyncio.Queue[tuple[Any, str, LiveMessage]], item: tuple[Any, str, LiveMessage]
    ) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("live updates are backing up; one to group %s dropped", item[1])

    def _ensure(
        self,
    ) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[tuple[Any, str, LiveMessage]]]:
        with self._lock:
            if self._loop is None or self._queue is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                queue: asyncio.Queue[tuple[Any, str, LiveMessage]] = asyncio.Queue(QUEUE_LIMIT)
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._run, args=(loop, queue, ready), name="live-publisher", daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._queue, self._pid = loop, queue, os.getpid()
            return self._loop, self._queue

    @staticmethod
    def _run(
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[tuple[Any, str, LiveMessage]],
        ready: threading.Event,
    ) -> None:
        asyncio.set_event_loop(loop)

        async def drain() -> None:
            ready.set()
            while True:
                layer, group, message = await queue.get()
                try:
                    await layer.group_send(group, message)
                except Exception:
                    log.warning("live update to group %s failed", group, exc_info=True)

        loop.run_until_complete(drain())


QUEUE_LIMIT = 10_000
_publisher = _Publisher()
