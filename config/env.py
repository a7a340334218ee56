"""Typed readers for environment variables.

Every reader names the variable in its error so a bad value fails at start-up with a
message the operator can act on. Secrets accept a ``NAME_FILE`` variant holding a path to a
file with the value (Docker/Kubernetes secrets); setting both is an error.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class EnvReader:
    """Reads typed values from a mapping (``os.environ`` by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def is_set(self, name: str) -> bool:
        return self._raw(name) is not None or self._raw(f"{name}_FILE") is not None

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        value = self._raw(name)
        if value is None:
            if required:
                raise ImproperlyConfigured(f"{name} must be set.")
            if default is None:
                return ""
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a boolean; use one of: true, false, 1, 0, yes, no, on, off."
        )

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None
        if minimum is not None and number < minimum:
            raise ImproperlyConfigured(f"{name}={number} is below the minimum of {minimum}.")
        if maximum is not None and number > maximum:
            raise ImproperlyConfigured(f"{name}={number} is above the maximum of {maximum}.")
        return number

    def strings(self, name: str, default: list[str] | None = None) -> list[str]:
        value = self._raw(name)
        if value is None:
            return list(default or [])
        return [item.strip() for item in value.split(",") if item.strip()]

    def networks(self, name: str) -> list[str]:
        """Comma-separated IP networks in CIDR notation (a bare address is a /32 or /128)."""
        import ipaddress

        found = []
        for item in self.strings(name):
            try:
                found.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ImproperlyConfigured(
                    f"{name}: {item!r} is not an IP network; use CIDR notation such as "
                    "10.0.0.0/8 or 127.0.0.1/32, comma-separated."
                ) from None
        return found

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._raw(name)
        if value is None:
            return default
        if value not in choices:
            raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(choices)}.")
        return value

    def secret(self, name: str, *, required: bool = False) -> str:
        """A secret from ``NAME`` or from the file named by ``NAME_FILE``."""
        direct = self._raw(name)
        file_name = self._raw(f"{name}_FILE")
        if direct is not None and file_name is not None:
            raise ImproperlyConfigured(f"Set either {name} or {name}_FILE, not both.")
        if file_name is not None:
            try:
                value = Path(file_name).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ImproperlyConfigured(
                    f"{name}_FILE={file_name!r} cannot be read: {exc.strerror}."
                ) from None
            if not value:
                raise ImproperlyConfigured(f"{name}_FILE={file_name!r} is empty.")
            return value
        if direct is None:
            if required:
                raise ImproperlyConfigured(f"{name} (or {name}_FILE) must be set.")
            return ""
        return direct

    def secret_list(self, name: str, *, required: bool = False) -> list[str]:
        value = self.secret(name, required=required)
        return [item.strip() for item in value.replace("\n", ",").split(",") if item.strip()]

    def database(self, name: str, default: str, *, conn_max_age: int = 60) -> dict[str, Any]:
        value = self.secret(name) or default
        try:
            config = dj_database_url.parse(
                value, conn_max_age=conn_max_age, conn_health_checks=True
            )
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}") from None
        engine = config.get("ENGINE", "")
        if engine not in {"django.db.backends.postgresql", "django.db.backends.sqlite3"}:
            raise ImproperlyConfigured(
                f"{name} must point at PostgreSQL (postgres://...) or SQLite (sqlite:///...); "
                f"got engine {engine or 'unknown'}."
            )
        return dict(config)

    def url(self, name: str, *, schemes: tuple[str, ...]) -> str:
        value = self.secret(name)
        if value and not value.startswith(tuple(f"{scheme}://" for scheme in schemes)):
            raise ImproperlyConfigured(
                f"{name} must start with one of: {', '.join(s + '://' for s in schemes)}."
            )
        return value


def persistent_secret(path: Path, factory: Any = None) -> str:
    """Read a generated secret from ``path``, creating it (mode 0600) on first use."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = factory() if factory else secrets.token_urlsafe(50)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:  # another process won the race; use its value
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    return str(value)
