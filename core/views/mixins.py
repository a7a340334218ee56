from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from core.choices import Role

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def require_role(request: HttpRequest, role: str) -> None:
    user = request.user
    if not getattr(user, "has_role", None) or not user.has_role(role):  # type: ignore[union-attr]
        raise PermissionDenied(f"This needs the {role} role.")


class RoleRequiredMixin:
    """Pages: ``read_role`` for GET, ``write_role`` for POST (sign-in is the middleware's)."""

    read_role: str = Role.VIEWER
    write_role: str = Role.OPERATOR

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        require_role(request, self.read_role if request.method in SAFE_METHODS else self.write_role)
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
