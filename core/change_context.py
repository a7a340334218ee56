"""Who makes a change, through what, and why: the :class:`ChangeContext` every service takes.

Its own home, below :mod:`core.history` (which records it on each event and re-exports it, as
most of the tree imports ``from core.history import ChangeContext``) and below the API base
and the pages that build one from a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.choices import ActorType

if TYPE_CHECKING:
    from django.http import HttpRequest

    from core.models import User

MAX_REASON_LENGTH = 1000


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
