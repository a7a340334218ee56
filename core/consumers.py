"""WebSocket consumers. Sockets are refused before ``accept()`` unless signed in with a role."""

from __future__ import annotations

import re
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from core.choices import Role
from core.live import HISTORY_GROUP, JOBS_GROUP

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class FleetConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Base for live pages: authenticate, join the groups the user may see, forward messages.

    Subclasses set ``fixed_groups`` and may accept ``{"subscribe": "<group>"}`` messages by
    overriding :meth:`can_join`. Messages sent to a group with ``type`` ``"x.y"`` reach the
    browser as ``{"type": "x.y", "payload": ...}``.
    """

    read_role: str = Role.VIEWER
    fixed_groups: tuple[str, ...] = ()
    subscribable: re.Pattern[str] | None = None  # groups a client may also ask to watch
    max_groups = 50

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Groups are shared by several pages' consumers (``deployment.<id>`` carries rollout
        states and metrics): a group message this consumer has no handler for is not for it.
        Channels would otherwise raise and drop the socket."""
        kind = str(message.get("type", ""))
        if not kind.startswith("websocket.") and not hasattr(self, get_handler_name(message)):
            return
        await super().dispatch(message)

    async def connect(self) -> None:
        self.joined: set[str] = set()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not user.has_role(self.read_role):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        for group in self.fixed_groups:
            await self._join(group)
        await self.accept()

    async def _join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.joined.add(group)

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", set()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def can_join(self, group: str) -> bool:
        """Whether this user may watch ``group``: one matching ``subscribable``, up to
        ``max_groups`` in all (nothing beyond the fixed groups when it is None)."""
        if self.subscribable is None or not self.subscribable.match(group):
            return False
        return len(self.joined) < self.max_groups

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        group = content.get("subscribe") if isinstance(content, dict) else None
        if isinstance(group, str) and await self.can_join(group):
            await self._join(group)
            await self.send_json({"type": "subscribed", "payload": {"group": group}})
            return
        await self.send_json(
            {
                "type": "error",
                "payload": {"detail": "Live sockets are for watching; act through the page."},
            }
        )

    async def forward(self, message: dict[str, Any]) -> None:
        await self.send_json({"type": message["type"], "payload": message["payload"]})


class HistoryConsumer(FleetConsumer):
    """New history events as they are recorded (history page, overview)."""

    fixed_groups = (HISTORY_GROUP,)

    async def history_event(self, message: dict[str, Any]) -> None:
        await self.forward(message)


class JobsConsumer(FleetConsumer):
    """Job progress: every transition on ``jobs``; subscribe to ``job.<id>``, ``node.<id>``
    or ``variant.<id>`` for progress (a few messages per second per running job)."""

    fixed_groups = (JOBS_GROUP,)
    subscribable = re.compile(r"^(job|node|variant)\.\d{1,18}$")
    max_groups = 200

    async def job_update(self, message: dict[str, Any]) -> None:
        await self.forward(message)
