"""Errors raised by services; the API and pages turn them into answers a person can act on."""

from __future__ import annotations


class ServiceError(Exception):
    """A request that cannot be carried out as asked (HTTP 400 unless a subclass says)."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ConflictError(ServiceError):
    """The request clashes with the current state (HTTP 409)."""

    status_code = 409
    code = "conflict"


class PreconditionFailed(ServiceError):
    """An If-Match version that is no longer current (HTTP 412)."""

    status_code = 412
    code = "stale_version"


def check_version(current: int, expected: int | None, what: str) -> None:
    if expected is not None and expected != current:
        raise PreconditionFailed(
            f"{what} was changed by someone else (your version {expected}, current {current}). "
            "Reload it and apply your change again."
        )
