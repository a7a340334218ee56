"""Writing the team-shared history.

Every service takes a :class:`ChangeContext` (who acts, why, under which request) and calls
:func:`record` inside its transaction, so the event exists exactly when the change does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import QuerySet
from django.urls import NoReverseMatch, reverse

from core.choices import ActorType
from core.models import HistoryEvent

if TYPE_CHECKING:
    from django.http import HttpRequest

    from core.models import User

MAX_REASON_LENGTH = 1000
REDACTED = "(redacted)"

# target_type -> URL pattern name taking the target's id, for links from the timeline.
_TARGET_URLS: dict[str, str] = {}


def register_target_url(target_type: str, url_name: str) -> None:
    _TARGET_URLS[target_type] = url_name


def target_url(target_type: str, target_id: str) -> str | None:
    url_name = _TARGET_URLS.get(target_type)
    if not url_name:
        return None
    try:
        return reverse(url_name, args=[target_id])
    except NoReverseMatch:
        return None


def clean_reason(reason: str | None) -> str:
    return (reason or "").strip()[:MAX_REASON_LENGTH]


@dataclass(frozen=True)
class ChangeContext:
    """Who makes a change, through what, and why."""

    actor_type: str
    actor_name: str
    actor_id: str = ""
    actor_detail: str = ""
    reason: str = ""
    request_id: str = ""
    user: User | None = None

    @classmethod
    def for_user(cls, user: User, *, reason: str = "", request_id: str = "") -> ChangeContext:
        return cls(
            actor_type=ActorType.USER,
            actor_name=user.get_username(),
            actor_id=str(user.pk),
            reason=clean_reason(reason),
            request_id=request_id,
            user=user,
        )

    @classmethod
    def system(cls, component: str = "system", *, reason: str = "") -> ChangeContext:
        return cls(actor_type=ActorType.SYSTEM, actor_name=component, reason=clean_reason(reason))

    @classmethod
    def from_request(cls, request: HttpRequest, *, reason: str | None = None) -> ChangeContext:
        """Build from a page or API request; the reason comes from a field or the header."""
        from core.models import ApiToken

        user = request.user
        request_id = getattr(request, "request_id", "")
        if reason is None or not reason.strip():
            reason = request.headers.get("X-Change-Reason", "")
        token = getattr(request, "auth", None)
        ctx = cls.for_user(user, reason=reason, request_id=request_id)  # type: ignore[arg-type]
        if isinstance(token, ApiToken):
            return cls(
                actor_type=ActorType.TOKEN,
                actor_name=ctx.actor_name,
                actor_id=ctx.actor_id,
                actor_detail=str(token),
                reason=ctx.reason,
                request_id=request_id,
                user=ctx.user,
            )
        return ctx


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
    from core import live

    live.history_event_recorded(event)
