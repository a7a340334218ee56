"""Lifespan handling for the web process that embeds the gateway (config/asgi.py).

Kept apart from :mod:`gateway.asgi`, which sets Django up for a process of its own.
"""

from __future__ import annotations

from typing import Any

from gateway.runtime import local_gateway


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """On shutdown, write the usage still in memory and close the replica connections."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await local_gateway.close_current()
            await send({"type": "lifespan.shutdown.complete"})
            return
