"""Telling every gateway process that keys or aliases changed (Redis pub/sub).

Services publish after their transaction commits; each gateway process listens and reloads
its routing table at once. The table is also reloaded every FLEET_GATEWAY_REFRESH_MS, so a
lost message (or no Redis in the embedded mode) delays a change by at most that long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings

log = logging.getLogger(__name__)

CHANNEL = "slm-fleet:gateway:changed"

# This process's own gateways, told at once without waiting for the message. The seam is
# inverted: gateway.runtime (which subscribes to CHANNEL, so sits above this module) adds
# its ``local_gateway.invalidate`` here when it is imported; a process that never imported
# it has no gateway to tell.
_local_listeners: list[Callable[[], None]] = []


def on_local_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` (from any thread) whenever this process publishes a change."""
    if listener not in _local_listeners:
        _local_listeners.append(listener)


def _tell_local() -> None:
    for listener in list(_local_listeners):
        listener()


def publish(reason: str) -> None:
    """Announce a change (called with ``transaction.on_commit``); never raises."""
    if not settings.REDIS_URL:
        _tell_local()
        return
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        try:
            client.publish(CHANNEL, reason)
        finally:
            client.close()
    except Exception:
        log.warning("could not announce a gateway change (%s); gateways see it on reload", reason)
    _tell_local()  # this process's gateway, without waiting for the message
