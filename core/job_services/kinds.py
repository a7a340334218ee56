"""Job kinds: what one kind of job does beyond the generic state machine, and its registry.

Handlers are registered by the owning app in its ``job_kinds`` module, found by
autodiscovery the first time a handler is looked up.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.utils.module_loading import autodiscover_modules

from core.change_context import ChangeContext
from core.errors import ServiceError
from core.jobs import Job


class JobKindHandler:
    """What one kind of job needs beyond the generic state machine. Subclass per kind."""

    kind: str = ""

    def dispatch(self, job: Job) -> None:
        """Send the nudge (a Celery message) that makes a worker or agent claim ``job``."""
        raise NotImplementedError

    def check_result(self, job: Job, result: dict[str, Any]) -> str:
        """A worker's success report checked against what was asked; '' or what is wrong."""
        return ""

    def on_finished(self, job: Job, ctx: ChangeContext) -> None:
        """Bookkeeping inside the transaction that finished ``job`` (any final state)."""

    def on_retry(self, ctx: ChangeContext, job: Job) -> None:
        """Before a failed or cancelled job goes back to the queue (may set a dependency)."""

    def message_expires(self) -> float:
        """Seconds a dispatch message stays valid on the broker."""
        return float(settings.FLEET_COMMAND_TTL_SECONDS)


_handlers: dict[str, JobKindHandler] = {}
_discovered = False
_discover_lock = threading.Lock()


def register_kind(handler: JobKindHandler) -> JobKindHandler:
    _handlers[handler.kind] = handler
    return handler


def handler_for(kind: str) -> JobKindHandler:
    global _discovered
    if not _discovered:
        with _discover_lock:
            if not _discovered:
                autodiscover_modules("job_kinds")
                _discovered = True
    try:
        return _handlers[kind]
    except KeyError:
        raise ServiceError(f"No handler is registered for jobs of kind {kind!r}.") from None
