"""Telling every gateway process that keys or aliases changed (Redis pub/sub).

Services publish after their transaction commits; each gateway process listens and reloads
its routing table at once. The table is also reloaded every FLEET_GATEWAY_REFRESH_MS, so a
lost message (or no Redis in the embedded mode) delays a change by at most that long.
"""

from __future__ import annotations

import logging

from django.conf import settings

log = logging.getLogger(__name__)

CHANNEL = "slm-fleet:gateway:changed"


def publish(reason: str) -> None:
    """Announce a change (called with ``transaction.on_commit``); never raises."""
    if not settings.REDIS_URL:
        from gateway.runtime import local_gateway

        local_gateway.invalidate()
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
    from gateway.runtime import local_gateway

    local_gateway.invalidate()  # this process's gateway, without waiting for the message
