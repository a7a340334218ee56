"""The vocabulary of the permission matrix (tests/core/test_permissions_matrix.py).

Apps add their own rows in a ``matrix_rows.py`` module anywhere under tests/: it defines
``ROWS`` (a list of :class:`Row`) and may define ``setup(world)`` (called once when the world
is built; keep what you create in ``world.extra``) and ``placeholders(world, persona)``
(extra ``{name}`` values for paths and bodies). The matrix finds these modules by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

LOGIN_URL = "/login/"


# --- Expectations ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Redirect:
    """A 302 whose Location starts with ``to`` (``LOGIN`` means the sign-in page, ?next=)."""

    to: str


LOGIN = Redirect(LOGIN_URL + "?next=")
Expected = int | Redirect
Check = Callable[[Any, str, Any], None]  # (response, persona, world)


@dataclass(frozen=True)
class Row:
    id: str
    route: str  # URL name the path must resolve to
    method: str
    path: str  # may hold {placeholders} from World.placeholders
    expected: dict[str, Expected]
    api: bool
    body: dict[str, Any] | None = None
    check: Check | None = None


def api(
    id: str,
    route: str,
    method: str,
    path: str,
    *,
    admin: Expected,
    operator: Expected,
    viewer: Expected,
    anonymous: Expected = 401,
    body: dict[str, Any] | None = None,
    check: Check | None = None,
) -> Row:
    expected = {"admin": admin, "operator": operator, "viewer": viewer, "anonymous": anonymous}
    return Row(id, route, method, path, expected, api=True, body=body, check=check)


def page(
    id: str, route: str, method: str, path: str, *, anonymous: Expected = LOGIN, **rest: Any
) -> Row:
    """A console page's row: like :func:`api`, but anonymous users go to the sign-in page."""
    return replace(api(id, route, method, path, anonymous=anonymous, **rest), api=False)


def everyone(status: Expected) -> dict[str, Expected]:
    return {"admin": status, "operator": status, "viewer": status}


def admin_only(ok: Expected, denied: Expected = 403) -> dict[str, Expected]:
    return {"admin": ok, "operator": denied, "viewer": denied}


def operators(ok: Expected, denied: Expected = 403) -> dict[str, Expected]:
    return {"admin": ok, "operator": ok, "viewer": denied}
