"""Foreign keys in diffs, shown by name.

A diff stores ids (a name can change; the id is what the change referred to), so pages would
show ``variant 2805``. Each app registers, for the field names that hold ids of its objects,
how to name a set of ids at once (one query per field and page); :func:`rows` turns a diff into
table rows whose values read ``name (#id)``, or ``#id (deleted)`` for an id that is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

Namer = Callable[[set[int]], Mapping[int, str]]
_namers: dict[str, Namer] = {}


def register(field: str, namer: Namer) -> None:
    """Name the ids held by diff fields called ``field`` (or ``<prefix>.field``, ``field_id``)."""
    _namers[field] = namer


def _namer_key(field: str) -> str | None:
    last = field.rsplit(".", 1)[-1]
    last = last.removesuffix("_id")
    return last if last in _namers else None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def rows(changes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """``[{"field", "before", "after"}]``, ids replaced by their names."""
    changes = changes or {}
    wanted: dict[str, set[int]] = {}
    for field, change in changes.items():
        key = _namer_key(field)
        if key and isinstance(change, Mapping):
            values = (change.get("before"), change.get("after"))
            wanted.setdefault(key, set()).update(
                v for v in values if isinstance(v, int) and not isinstance(v, bool)
            )
    names = {key: dict(_namers[key](ids)) for key, ids in wanted.items() if ids}

    def shown(key: str | None, value: Any) -> Any:
        if key is None or not _is_id(value):
            return value
        name = names.get(key, {}).get(value)
        return f"{name} (#{value})" if name else f"#{value} (deleted)"

    out = []
    for field, change in changes.items():
        key = _namer_key(field)
        change = change if isinstance(change, Mapping) else {"before": None, "after": change}
        out.append(
            {
                "field": field,
                "before": shown(key, change.get("before")),
                "after": shown(key, change.get("after")),
            }
        )
    return out


def names_of(objects: Iterable[Any]) -> dict[int, str]:
    """``{pk: str(obj)}``: the usual namer body."""
    return {obj.pk: str(obj) for obj in objects}
