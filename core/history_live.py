"""History events to the live pages: the receiver of :data:`core.history.event_recorded`.

The seam between history and live updates: core.history sends the signal after the commit
that recorded an event and knows nothing of Channels; this receiver, connected in
``CoreConfig.ready()``, sends the event to the ``history`` group as the API shows it.
"""

from __future__ import annotations

from typing import Any

from core import live
from core.api.serializers import HistoryEventSerializer
from core.models import HistoryEvent


def history_event_recorded(event: HistoryEvent) -> None:
    """After the commit that recorded ``event``: to the history pages (as the API shows it)."""
    live.send(live.HISTORY_GROUP, "history.event", dict(HistoryEventSerializer(event).data))


def on_event_recorded(sender: Any, event: HistoryEvent, **kwargs: Any) -> None:
    history_event_recorded(event)
