"""Holding requests for an autoscaled deployment that has no replica to serve them.

A deployment scaled to zero (or whose replicas are all starting) keeps its callers here:
the first held request asks for a replica at once (:func:`deployments.autoscaler.wake`, on
a thread of its own: the only database write on the request path, once per cold start),
and every held request waits, up to the policy's ``cold_start_timeout_seconds`` and
``cold_start_queue``, for a replica to appear in the routing table; then it is forwarded
like any other, streamed or not. Held requests count as in flight for the autoscaler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from gateway.table import ColdStart, Endpoint, RoutingTable

log = logging.getLogger(__name__)

WAKE_AGAIN_S = 1.0  # a deployment is woken at most this often
POLL_S = 0.25  # a held request looks at a fresh table at least this often


class Refused(Exception):
    """A held request that cannot wait: ``why`` is "queue_full" or "timeout"."""

    def __init__(self, why: str, waited: float) -> None:
        super().__init__(why)
        self.why = why
        self.waited = waited


class Gateway(Protocol):
    """What the activator uses of its gateway (gateway.runtime.Gateway)."""

    table: RoutingTable
    stats: Any
    pool: Any

    async def reload(self) -> None: ...


class Activator:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.held: dict[str, int] = {}
        self.woken_at: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-wake")

    @property
    def waiting(self) -> bool:
        return any(self.held.values())

    def table_changed(self) -> None:
        """A fresh table is in: every held request looks again."""
        self.changed.set()
        self.changed = asyncio.Event()

    async def hold(self, deployment: str, limits: ColdStart) -> tuple[Endpoint, ...]:
        """Endpoints of ``deployment`` once one is routable, or :class:`Refused`."""
        started = time.monotonic()
        if self.held.get(deployment, 0) >= limits.queue:
            raise Refused("queue_full", 0.0)
        self.held[deployment] = self.held.get(deployment, 0) + 1
        self.gateway.stats.hold(deployment, +1)
        try:
            self._wake(deployment)
            deadline = started + limits.timeout_s
            while True:
                endpoints = self._routable(deployment)
                if endpoints:
                    return endpoints
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Refused("timeout", time.monotonic() - started)
                changed = self.changed
                try:
                    await asyncio.wait_for(changed.wait(), min(remaining, POLL_S))
                except TimeoutError:
                    self._wake(deployment)
                    await self.gateway.reload()
        finally:
            self.held[deployment] -= 1
            self.gateway.stats.hold(deployment, -1)

    def _routable(self, deployment: str) -> tuple[Endpoint, ...]:
        endpoints = self.gateway.table.endpoints.get(deployment, ())
        return tuple(self.gateway.pool.healthy(endpoints))

    def _wake(self, deployment: str) -> None:
        now = time.monotonic()
        if now - self.woken_at.get(deployment, -WAKE_AGAIN_S) < WAKE_AGAIN_S:
            return
        self.woken_at[deployment] = now
        held = self.held.get(deployment, 0)
        future = asyncio.get_running_loop().run_in_executor(
            self.executor, _wake_deployment, deployment, held
        )
        future.add_done_callback(_log_failure)

    def close(self) -> None:
        self.executor.shutdown(wait=False)


def _wake_deployment(deployment: str, held: int) -> bool:
    from deployments.autoscaler import wake

    return wake(deployment, held)


def _log_failure(future: asyncio.Future[bool]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("waking a deployment at zero failed: %r", future.exception())
