"""Writing the team-shared history.

Every service takes a :class:`ChangeContext` (who acts, why, under which request) and calls
:func:`record` inside its transaction, so the event exists exactly when the change does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import QuerySet
from django.dispatch import Signal

# ChangeContext, the reason's rules and the target links have homes of their own (below this
# module); re-exported here, where most of the tree imports them from.
from core.change_context import MAX_REASON_LENGTH as MAX_REASON_LENGTH
from core.change_context import ChangeContext
from core.change_context import clean_reason as clean_reason
from core.models import HistoryEvent
from core.targets import register_target_url as register_target_url
from core.targets import target_url as target_url

REDACTED = "(redacted)"

# Sent after the commit that recorded an event, with ``event=`` the HistoryEvent. The seam
# between history and the live pages: core.history_live's receiver (connected in
# CoreConfig.ready()) pushes the event to browsers, so history needs no import of core.live.
event_recorded = Signal()


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def snapshot(instance: models.Model, fields: Iterable[str]) -> dict[str, Any]:
    """The named fields of ``instance`` as JSON-safe values (foreign keys as ids)."""
    data: dict[str, Any] = {}
    for name in fields:
        field = instance._meta.get_field(name)
        attname = getattr(field, "attname", name)
        data[name] = getattr(instance, attname)
    return dict(_json_safe(data))


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Changed fields as ``{field: {"before": old, "after": new}}``."""
    changes: dict[str, dict[str, Any]] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old != new:
            changes[key] = {"before": old, "after": new}
    return changes


def record(
    ctx: ChangeContext,
    verb: str,
    target: models.Model | None = None,
    *,
    changes: dict[str, dict[str, Any]] | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    target_name: str | None = None,
) -> HistoryEvent:
    """Append one history event; call it inside the transaction that makes the change."""
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or str(target.pk)
        target_name = target_name or str(target)
    if not target_type or target_id is None:
        raise ValueError("A history event needs a target.")
    event = HistoryEvent.objects.create(
        actor_type=ctx.actor_type,
        actor_id=ctx.actor_id,
        actor_name=ctx.actor_name[:150],
        actor_detail=ctx.actor_detail[:200],
        verb=verb,
        target_type=target_type,
        target_id=str(target_id),
        target_name=(target_name or "")[:200],
        changes=_json_safe(changes or {}),
        reason=ctx.reason,
        request_id=ctx.request_id[:64],
    )
    transaction.on_commit(lambda: _publish(event))
    return event


def events_about(target: models.Model, limit: int = 20) -> QuerySet[HistoryEvent]:
    """The newest events recorded about ``target`` (named as :func:`record` names it)."""
    return HistoryEvent.objects.filter(
        target_type=target._meta.label_lower, target_id=str(target.pk)
    )[:limit]


LIVE_PUBLISH_LIMIT = 200


def record_many(
    ctx: ChangeContext,
    verb: str,
    targets: list[models.Model],
    *,
    changes: dict[str, dict[str, Any]] | None = None,
) -> list[HistoryEvent]:
    """One event per target, written in a single INSERT (a fleet-wide sweep, say).

    Live messages go out for up to LIVE_PUBLISH_LIMIT events; past that, pages pick the
    events up from their REST resync instead of a flood of socket messages.
    """
    safe_changes = _json_safe(changes or {})
    events = HistoryEvent.objects.bulk_create(
        [
            HistoryEvent(
                actor_type=ctx.actor_type,
                actor_id=ctx.actor_id,
                actor_name=ctx.actor_name[:150],
                actor_detail=ctx.actor_detail[:200],
                verb=verb,
                target_type=target._meta.label_lower,
                target_id=str(target.pk),
                target_name=str(target)[:200],
                changes=safe_changes,
                reason=ctx.reason,
                request_id=ctx.request_id[:64],
            )
            for target in targets
        ]
    )
    if len(events) <= LIVE_PUBLISH_LIMIT:
        saved = [event for event in events if event.pk is not None]

        def publish_all() -> None:
            for event in saved:
                _publish(event)

        transaction.on_commit(publish_all)
    return events


def _publish(event: HistoryEvent) -> None:
    event_recorded.send(sender=HistoryEvent, event=event)
