"""One gateway per event loop: routing table, replica pool, limiter, usage, live figures.

:data:`local_gateway` hands each event loop (the web process's, or a separate gateway
process's) its :class:`Gateway`, started on first use. Background tasks keep the routing
table fresh (periodic reload, and at once on a change announced over Redis pub/sub),
publish the live figures the console shows, and write usage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings

from gateway import invalidation
from gateway.activator import Activator
from gateway.limits import Limiter, LocalLimiter, RedisLimiter
from gateway.metrics import LiveStats
from gateway.pool import ReplicaPool
from gateway.table import Endpoint, RoutingTable, load_table
from gateway.upstream import Pool
from gateway.usage import UsageRecorder

log = logging.getLogger(__name__)

LIVE_KEY = "slm-fleet:gw:live"
LIVE_PUBLISH_S = 1.0  # also the autoscaler's concurrency window (gateway/signals.py)
LIVE_STALE_S = 10.0
UNKNOWN_KEY_RELOAD_S = 0.25  # an unknown key reloads the table at most this often


class Gateway:
    def __init__(self) -> None:
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.refresh_s = settings.FLEET_GATEWAY_REFRESH_MS / 1000
        self.max_body = settings.FLEET_GATEWAY_MAX_BODY_BYTES
        self.retries = settings.FLEET_GATEWAY_RETRIES
        self.redis_url = settings.REDIS_URL
        self.table = RoutingTable()
        self.stale = True
        self.last_reload_started = 0.0
        self.reloading: asyncio.Task[None] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-table")
        self.pool = ReplicaPool(settings.FLEET_GATEWAY_EJECT_SECONDS, self.probe)
        self.limiter: Limiter = RedisLimiter(self.redis_url) if self.redis_url else LocalLimiter()
        self.usage = UsageRecorder(self.limiter)
        self.stats = LiveStats()
        self.upstream: Pool | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.started = False
        self.table_at = 0.0  # epoch seconds of the last table load (drains wait for it)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.activator = Activator(self)

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.upstream = Pool(
            settings.FLEET_GATEWAY_CONNECT_TIMEOUT_MS / 1000,
            settings.FLEET_GATEWAY_READ_TIMEOUT_SECONDS,
            settings.FLEET_GATEWAY_POOL_SIZE,
        )
        loop = self.loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._refresh_forever())]
        if self.redis_url:
            self.tasks.append(loop.create_task(self._listen_forever()))
        self.tasks.append(loop.create_task(self._publish_forever()))
        self.started = True

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.usage.close()
        if self.upstream is not None:
            await self.upstream.close()
        await self.limiter.close()
        self.executor.shutdown(wait=False)
        self.activator.close()

    # --- routing table ------------------------------------------------------------------
    def invalidate(self) -> None:
        """Keys, aliases or routable replicas changed (may be called from any thread)."""
        self.stale = True
        if self.activator.waiting and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._reload_soon)

    def _reload_soon(self) -> None:
        """Reload now (held requests wait for a replica to appear in the table)."""
        task = asyncio.get_running_loop().create_task(self.reload())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def reload(self) -> None:
        """Load a fresh table (one load at a time; callers share an in-flight one)."""
        if self.reloading is None or self.reloading.done():
            self.reloading = asyncio.get_running_loop().create_task(self._reload())
        await asyncio.shield(self.reloading)

    async def _reload(self) -> None:
        self.last_reload_started = time.monotonic()
        self.stale = False
        loaded_at = time.time()
        table = await asyncio.get_running_loop().run_in_executor(self.executor, load_table)
        self.table = table
        self.table_at = loaded_at
        self.activator.table_changed()
        self.pool.forget_missing(
            {e.replica_id for endpoints in table.endpoints.values() for e in endpoints}
        )

    async def current(self) -> RoutingTable:
        if self.stale or not self.table.loaded_at:
            await self.reload()
        return self.table

    async def reload_for_unknown_key(self) -> RoutingTable:
        """A key not in the table may be brand new: reload, but not more than 4 times a s."""
        if time.monotonic() - self.last_reload_started >= UNKNOWN_KEY_RELOAD_S:
            await self.reload()
        return self.table

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.reload()
            except Exception:
                log.exception("reloading the gateway's routing table failed; keeping the last")

    async def _listen_forever(self) -> None:
        import redis.asyncio as aioredis

        while True:
            client = aioredis.Redis.from_url(self.redis_url)
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe(invalidation.CHANNEL)
                self.stale = True  # changes missed while not subscribed
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.stale = True
                        if self.activator.waiting:
                            self._reload_soon()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("gateway change feed lost (%s); reconnecting in 1 s", exc)
                await asyncio.sleep(1)
            finally:
                await client.aclose()

    # --- replicas -----------------------------------------------------------------------
    async def probe(self, endpoint: Endpoint) -> bool:
        assert self.upstream is not None
        response = await asyncio.wait_for(
            self.upstream.request("GET", endpoint.host, endpoint.port, endpoint.health_path), 2
        )
        try:
            await asyncio.wait_for(response.read(), 2)
        finally:
            response.close()
        return response.status == 200

    # --- live figures -------------------------------------------------------------------
    def live_summary(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "at": time.time(),
            "deployments": self.stats.summary(),
            "ejected_replicas": self.pool.ejected(),
            "table_at": self.table_at,
            "outstanding": {
                str(rid): stats.outstanding
                for rid, stats in self.pool.stats.items()
                if stats.outstanding
            },
        }

    async def _publish_forever(self) -> None:
        if not self.redis_url:
            return
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            while True:
                await asyncio.sleep(LIVE_PUBLISH_S)
                try:
                    async with client.pipeline(transaction=False) as pipe:
                        summary = self.live_summary()
                        summary["autoscale"] = self.stats.take_concurrency()
                        pipe.hset(LIVE_KEY, self.instance, json.dumps(summary))
                        pipe.expire(LIVE_KEY, 60)
                        await pipe.execute()
                except Exception as exc:
                    log.warning("publishing the gateway's live figures failed: %s", exc)
        finally:
            await client.aclose()


class Gateways:
    """The gateway of each running event loop in this process."""

    def __init__(self) -> None:
        self.by_loop: dict[int, Gateway] = {}

    def get(self) -> Gateway:
        loop_id = id(asyncio.get_running_loop())
        gateway = self.by_loop.get(loop_id)
        if gateway is None:
            gateway = self.by_loop[loop_id] = Gateway()
            gateway.start()
        return gateway

    def invalidate(self) -> None:
        for gateway in list(self.by_loop.values()):
            gateway.invalidate()

    async def close_current(self) -> None:
        gateway = self.by_loop.pop(id(asyncio.get_running_loop()), None)
        if gateway is not None:
            await gateway.close()

    def summaries(self) -> list[dict[str, Any]]:
        return [g.live_summary() for g in list(self.by_loop.values())]


local_gateway = Gateways()
# A change published by this process reaches its own gateways at once (the listener seam
# of gateway.invalidation, which must not import this module).
invalidation.on_local_change(local_gateway.invalidate)
