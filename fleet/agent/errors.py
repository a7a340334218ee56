"""Errors raised by the agent's adapters to outside systems (Docker engine, NVML, ...).

Every adapter raises one family of errors that says whether retrying can help, so a
caller (a task, the heartbeat loop) can decide between backing off and giving up
without knowing the outside system's own exception types.
"""

from __future__ import annotations

from typing import Any


class AdapterError(Exception):
    """An outside system failed; ``retryable`` says whether the same call may succeed later."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments are not in ``args``: keep pickling and copying faithful.
        return (_rebuild, (type(self), self.message, self.retryable))


def _rebuild(cls: type[AdapterError], message: str, retryable: bool) -> AdapterError:
    error = cls.__new__(cls)
    AdapterError.__init__(error, message, retryable=retryable)
    return error


class DockerUnavailable(AdapterError):
    """The Docker engine could not be reached (socket missing, refused, timed out)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class DockerError(AdapterError):
    """The Docker engine answered with an error (bad request, conflict, server fault)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable)
