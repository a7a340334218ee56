"""Read what our code put on the real broker: the Celery messages on ``node.<id>`` queues.

Tests that check which orders were sent read them back from Redis with kombu instead of
replacing ``send_task``: the message that a node's agent would consume is the one asserted.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.dateparse import parse_datetime
from kombu import Connection


class NodeQueues:
    """Drains the queues of the nodes the test names (other queues are left alone)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or str(settings.CELERY_BROKER_URL)

    def drain(self, *queues: str) -> list[dict[str, Any]]:
        """The messages now on ``queues``, removed from them, oldest first."""
        found: list[dict[str, Any]] = []
        with Connection(self.url) as conn:
            for name in queues:
                queue = conn.SimpleQueue(name, no_ack=True)
                try:
                    while True:
                        try:
                            message = queue.get_nowait()
                        except queue.Empty:
                            break
                        body = message.payload
                        args = body[0] if isinstance(body, list | tuple) else body.get("args")
                        expires = message.headers.get("expires")
                        found.append(
                            {
                                "name": message.headers["task"],
                                "args": list(args),
                                "queue": name,
                                "expires": parse_datetime(expires) if expires else None,
                            }
                        )
                finally:
                    queue.close()
        return found


class _Accumulated:
    """A list-like view of what has arrived so far; subclasses say what to read and keep."""

    def __init__(self) -> None:
        self.queues = NodeQueues()
        self.seen: list[Any] = []

    def _collect(self) -> None:
        raise NotImplementedError

    def _read(self) -> list[Any]:
        self._collect()
        return self.seen

    def __eq__(self, other: object) -> bool:
        return self._read() == other

    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, index: Any) -> Any:
        return self._read()[index]

    def __len__(self) -> int:
        return len(self._read())

    def clear(self) -> None:
        self._read()
        self.seen.clear()


class JobMessages(_Accumulated):
    """Job messages on the real broker as ``(task, job id, queue)``, in the order sent.

    Reads the control queue and the queues of every node in the test database each time it
    is looked at. At creation it empties the control queue and the queues of the next node
    ids the database will hand out, so messages of earlier runs are never counted.
    """

    AHEAD = 50

    def __init__(self) -> None:
        from django.db import connection

        super().__init__()
        with connection.cursor() as cursor:
            cursor.execute("SELECT COALESCE(MAX(id), 0) FROM fleet_node")
            (last,) = cursor.fetchone()
        upcoming = [f"node.{pk}" for pk in range(last + 1, last + 1 + self.AHEAD)]
        self.queues.drain("control", *upcoming)

    def _collect(self) -> None:
        from fleet.models import Node

        names = ["control", *(f"node.{pk}" for pk in Node.objects.values_list("pk", flat=True))]
        for message in self.queues.drain(*names):
            self.seen.append((message["name"], int(message["args"][0]), message["queue"]))


class Nudges(_Accumulated):
    """Deployment ids of the reconcile nudges on the control queue, in the order sent."""

    def __init__(self, task: str) -> None:
        super().__init__()
        self.task = task
        self.queues.drain("control")

    def _collect(self) -> None:
        for message in self.queues.drain("control"):
            if message["name"] == self.task:
                self.seen.append(int(message["args"][0]))
