"""The live metrics socket (``/ws/metrics/``): watch a deployment, a node or the fleet.

A signed-in user with a role subscribes with ``{"subscribe": "deployment.<id>"}`` (or
``node.<id>``, ``fleet``); the group must name something that exists (checked in the
database when joining). Sockets are refused before ``accept()`` when unauthenticated or
inactive (``core.consumers.FleetConsumer``), origins are checked by the ASGI stack
(``config/asgi.py``), and nothing sent on the socket changes anything: viewers watch.
"""

from __future__ import annotations

import re
from typing import Any

from channels.db import database_sync_to_async

from core.consumers import FleetConsumer
from core.live import FLEET_GROUP
from monitoring.live import MESSAGE_TYPE

GROUP = re.compile(r"^(deployment|node)\.(\d{1,18})$")
FORWARDED_PREFIXES = ("deployment.", "job.")  # state changes sent to the same groups


@database_sync_to_async
def _exists(kind: str, pk: int) -> bool:
    from deployments.models import Deployment
    from fleet.models import Node

    model = Deployment if kind == "deployment" else Node
    return bool(model.objects.filter(pk=pk).exists())


class MetricsConsumer(FleetConsumer):
    max_groups = 50

    async def can_join(self, group: str) -> bool:
        if len(self.joined) >= self.max_groups:
            return False
        if group == FLEET_GROUP:
            return True
        match = GROUP.match(group)
        if match is None:
            return False
        return await _exists(match.group(1), int(match.group(2)))

    async def dispatch(self, message: dict[str, Any]) -> None:
        kind = str(message.get("type", ""))
        if kind == MESSAGE_TYPE or kind.startswith(FORWARDED_PREFIXES):
            if "payload" in message:
                await self.forward(message)
            return
        if "." in kind and not kind.startswith("websocket."):
            return  # another app's message to a shared group: not for this socket
        await super().dispatch(message)
