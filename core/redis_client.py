"""The process's shared Redis client (settings.REDIS_URL), for anything that reads or writes
Redis outside Celery and Channels: the monitoring snapshot's queue depths, the alerts' pending
holds, the shared duration histograms.

One client per URL and process; connection pooling is the client's. Callers check
``settings.REDIS_URL`` first (the embedded mode has no Redis).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

_clients: dict[str, Any] = {}


def redis_client() -> Any:
    """One Redis client per URL and process (connection pooling is the client's)."""
    import redis

    url = str(settings.REDIS_URL)
    client = _clients.get(url)
    if client is None:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        _clients[url] = client
    return client
