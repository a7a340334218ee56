"""Choosing a replica: least outstanding requests between two picked at random, ejection.

One :class:`ReplicaPool` per gateway process (per event loop). It tracks, per replica
endpoint, the requests in flight and failures. A replica that fails (connection refused or
reset, timeout, 5xx before the first byte) is ejected for a back-off period
(FLEET_GATEWAY_EJECT_SECONDS, doubling per failed probe up to 60 s) and probed back on its
health path; it rejoins when the probe answers 200. Replicas join or leave when the routing
table changes (a rollout moving them), so ejection state follows the table.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from gateway.table import Endpoint

log = logging.getLogger(__name__)

MAX_EJECT_S = 60.0


@dataclass
class ReplicaStats:
    outstanding: int = 0
    ejected_until: float = 0.0
    backoff: float = 0.0
    failures: int = 0
    probing: bool = False


Probe = Callable[[Endpoint], Awaitable[bool]]


class ReplicaPool:
    def __init__(self, eject_seconds: float, probe: Probe) -> None:
        self.eject_seconds = eject_seconds
        self.probe = probe
        self.stats: dict[int, ReplicaStats] = {}
        self.rng = random.Random()  # noqa: S311 - load spreading, not secrets

    def _stats(self, endpoint: Endpoint) -> ReplicaStats:
        stats = self.stats.get(endpoint.replica_id)
        if stats is None:
            stats = self.stats[endpoint.replica_id] = ReplicaStats()
        return stats

    def forget_missing(self, live_ids: set[int]) -> None:
        """Drop what is known of replicas that left every deployment's table."""
        for replica_id in list(self.stats):
            if replica_id not in live_ids and self.stats[replica_id].outstanding == 0:
                del self.stats[replica_id]

    def healthy(self, endpoints: Sequence[Endpoint], now: float | None = None) -> list[Endpoint]:
        now = time.monotonic() if now is None else now
        return [e for e in endpoints if self._stats(e).ejected_until <= now]

    def pick(self, endpoints: Sequence[Endpoint], exclude: set[int]) -> Endpoint | None:
        """Power of two choices on outstanding requests, skipping ejected and ``exclude``."""
        now = time.monotonic()
        candidates = [
            e
            for e in endpoints
            if e.replica_id not in exclude and self._stats(e).ejected_until <= now
        ]
        if not candidates:
            return None
        count = len(candidates)
        if count == 1:
            return candidates[0]
        i = int(self.rng.random() * count)
        j = int(self.rng.random() * (count - 1))
        first, second = candidates[i], candidates[j + 1 if j >= i else j]
        a, b = self._stats(first).outstanding, self._stats(second).outstanding
        return first if a <= b else second

    def acquire(self, endpoint: Endpoint) -> None:
        self._stats(endpoint).outstanding += 1

    def release(self, endpoint: Endpoint) -> None:
        stats = self._stats(endpoint)
        stats.outstanding = max(0, stats.outstanding - 1)

    def succeeded(self, endpoint: Endpoint) -> None:
        stats = self.stats.get(endpoint.replica_id)
        if stats is not None and (stats.failures or stats.backoff):
            stats.failures = 0
            stats.backoff = 0.0

    def failed(self, endpoint: Endpoint, why: str) -> bool:
        """Eject ``endpoint`` and start probing it back; False if it already was ejected."""
        stats = self._stats(endpoint)
        stats.failures += 1
        if stats.ejected_until > time.monotonic():
            return False
        stats.backoff = min(MAX_EJECT_S, stats.backoff * 2 or self.eject_seconds)
        stats.ejected_until = time.monotonic() + stats.backoff
        log.warning(
            "replica %s (%s) ejected for %.0f s: %s",
            endpoint.replica_id,
            endpoint.url,
            stats.backoff,
            why,
        )
        if not stats.probing:
            stats.probing = True
            asyncio.get_running_loop().create_task(self._probe_back(endpoint))
        return True

    def ejected(self) -> list[int]:
        now = time.monotonic()
        return [rid for rid, s in self.stats.items() if s.ejected_until > now]

    async def _probe_back(self, endpoint: Endpoint) -> None:
        stats = self._stats(endpoint)
        try:
            while endpoint.replica_id in self.stats:
                await asyncio.sleep(max(0.0, stats.ejected_until - time.monotonic()))
                if endpoint.replica_id not in self.stats:
                    return
                try:
                    ok = await self.probe(endpoint)
                except Exception:
                    ok = False
                if ok:
                    stats.ejected_until = 0.0  # backoff kept until a request succeeds
                    log.info("replica %s (%s) is back", endpoint.replica_id, endpoint.url)
                    return
                stats.backoff = min(MAX_EJECT_S, stats.backoff * 2 or self.eject_seconds)
                stats.ejected_until = time.monotonic() + stats.backoff
        finally:
            stats.probing = False
