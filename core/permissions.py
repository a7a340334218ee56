"""Role checks for the API (pages use core.views.mixins)."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from core.choices import Role, TokenScope
from core.models import ApiToken


def required_role(view: Any, method: str) -> str:
    """The role a request needs: per action if the view says, else read/write defaults."""
    action = getattr(view, "action", None)
    per_action: dict[str, str] = getattr(view, "action_roles", {})
    if action in per_action:
        return per_action[action]
    if method in SAFE_METHODS:
        return str(getattr(view, "read_role", Role.VIEWER))
    return str(getattr(view, "write_role", Role.OPERATOR))


class RolePermission(BasePermission):
    """Authenticated, active, role high enough, and a write-scoped token for writes."""

    message = "You do not have permission to do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        token = request.auth if isinstance(request.auth, ApiToken) else None
        if (
            token is not None
            and request.method not in SAFE_METHODS
            and token.scope != TokenScope.WRITE
        ):
            self.message = (
                "This API token has the read scope and cannot change anything; "
                "create a token with the write scope."
            )
            return False
        role = required_role(view, request.method or "GET")
        if not user.has_role(role):
            self.message = f"Your role ({user.role}) cannot do this; it needs the {role} role."
            return False
        return True
