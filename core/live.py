"""The one producer of live messages for browsers (Channels groups).

Groups: ``history`` (every new history event), ``fleet`` (summary changes), and
per-resource groups (``node.<id>``, ``deployment.<id>``, ``job.<id>``) added by later apps.
A failing channel layer never fails the change that triggered the message.
"""

from __future__ import annotations

import logging
from typing import Any, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

HISTORY_GROUP = "history"
FLEET_GROUP = "fleet"
JOBS_GROUP = "jobs"  # every job's transitions (progress goes to job.<id>, node.<id>, …)


class LiveMessage(TypedDict):
    type: str  # the consumer handler, e.g. "history.event" -> history_event()
    payload: dict[str, Any]


def send(group: str, message_type: str, payload: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message: LiveMessage = {"type": message_type, "payload": payload}
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # the change is committed; a lost live update is resynced by the page
        log.warning("live update to group %s failed", group, exc_info=True)


def history_event_recorded(event_id: int) -> None:
    from core.api.serializers import HistoryEventSerializer
    from core.models import HistoryEvent

    event = HistoryEvent.objects.filter(pk=event_id).first()
    if event is None:
        return
    send(HISTORY_GROUP, "history.event", dict(HistoryEventSerializer(event).data))
