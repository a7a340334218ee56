"""Per-key limits on requests and tokens per minute, counted in Redis.

Fixed one-minute windows (UTC minute): ``gw:rl:<key id>:<minute>:r`` counts requests (every
attempt within the key's rights, refused ones too), ``…:t`` the tokens of finished
requests. A request is refused with 429 when the window's requests are over the limit or
its tokens already reached the limit; ``Retry-After`` says when the window ends. Counters
expire two minutes after their window. Gateway processes share the counts through Redis, so
limits hold fleet-wide; each process counts locally and syncs every 100 ms (no Redis round
trip on the request path). Without Redis (the embedded mode on SQLite) the one web process
counts in memory. If Redis cannot be reached the process goes on counting locally (and
logs it): inference stays up when the limiter's store is down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from gateway.table import KeyInfo

log = logging.getLogger(__name__)

WINDOW_S = 60
PREFIX = "slm-fleet:gw:rl"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0
    message: str = ""


ALLOW = Verdict(True)


def _window(now: float) -> tuple[int, int]:
    minute = int(now // WINDOW_S)
    return minute, max(1, math.ceil((minute + 1) * WINDOW_S - now))


def _refusal(key: KeyInfo, what: str, limit: int, retry_after: int) -> Verdict:
    return Verdict(
        False,
        retry_after,
        f"Rate limit reached for key {key.name!r}: {limit} {what} per minute. "
        f"Retry after {retry_after} s, or ask an operator to raise the key's limit.",
    )


def _judge(key: KeyInfo, requests: int, tokens: int, retry_after: int) -> Verdict:
    if key.requests_per_minute is not None and requests > key.requests_per_minute:
        return _refusal(key, "requests", key.requests_per_minute, retry_after)
    if key.tokens_per_minute is not None and tokens >= key.tokens_per_minute:
        return _refusal(key, "tokens", key.tokens_per_minute, retry_after)
    return ALLOW


class RedisLimiter:
    """Counts in this process and syncs with Redis every SYNC_S (no round trip per request).

    A request is judged on the window's fleet-wide counts as of the last sync plus what this
    process counted since; every SYNC_S the local counts are added to Redis in one pipeline
    and the fleet-wide totals read back. With N gateway processes a key can go over its limit
    by what the other processes admitted within one sync period.
    """

    SYNC_S = 0.1

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.redis: Any = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        # (key id, minute) -> [requests known fleet-wide, tokens known, pending requests,
        # pending tokens]
        self.windows: dict[tuple[int, int], list[int]] = {}
        self.task: Any = None

    def _window_counts(self, key_id: int, minute: int) -> list[int]:
        counts = self.windows.get((key_id, minute))
        if counts is None:
            counts = self.windows[(key_id, minute)] = [0, 0, 0, 0]
            if self.task is None or self.task.done():
                self.task = asyncio.get_running_loop().create_task(self._sync_forever())
        return counts

    async def check(self, key: KeyInfo) -> Verdict:
        if key.requests_per_minute is None and key.tokens_per_minute is None:
            return ALLOW
        minute, retry_after = _window(time.time())
        counts = self._window_counts(key.id, minute)
        counts[2] += 1
        return _judge(key, counts[0] + counts[2], counts[1] + counts[3], retry_after)

    async def add_tokens(self, counts: dict[int, int]) -> None:
        """Add finished requests' tokens (``{key id: tokens}``) to this minute's windows."""
        minute, _ = _window(time.time())
        for key_id, tokens in counts.items():
            self._window_counts(key_id, minute)[3] += tokens

    async def sync(self) -> None:
        """Push pending counts to Redis, read the fleet-wide totals back."""
        current, _ = _window(time.time())
        for name in [name for name in self.windows if name[1] < current - 1]:
            del self.windows[name]
        if not self.windows:
            return
        names = list(self.windows)
        pending = {name: (self.windows[name][2], self.windows[name][3]) for name in names}
        for name in names:
            self.windows[name][2] = self.windows[name][3] = 0
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key_id, minute in names:
                    base = f"{PREFIX}:{key_id}:{minute}"
                    requests, tokens = pending[(key_id, minute)]
                    pipe.incrby(f"{base}:r", requests)
                    pipe.incrby(f"{base}:t", tokens)
                    pipe.expire(f"{base}:r", WINDOW_S * 2)
                    pipe.expire(f"{base}:t", WINDOW_S * 2)
                results = await pipe.execute()
        except Exception as exc:
            log.warning("rate limiter store unreachable (%s); counting locally meanwhile", exc)
            for name, (requests, tokens) in pending.items():
                counts = self.windows.setdefault(name, [0, 0, 0, 0])
                counts[2] += requests
                counts[3] += tokens
            return
        for index, name in enumerate(names):
            window = self.windows.get(name)
            if window is not None:
                window[0] = int(results[index * 4])
                window[1] = int(results[index * 4 + 1])

    async def _sync_forever(self) -> None:
        while self.windows:
            await asyncio.sleep(self.SYNC_S)
            await self.sync()

    async def close(self) -> None:
        await self.sync()
        if self.task is not None:
            self.task.cancel()
        await self.redis.aclose()


class LocalLimiter:
    """The same windows in this process's memory (embedded mode without Redis)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, int], list[int]] = {}

    def _slot(self, key_id: int, minute: int) -> list[int]:
        if len(self.counts) > 10_000:
            self.counts = {k: v for k, v in self.counts.items() if k[1] >= minute - 1}
        return self.counts.setdefault((key_id, minute), [0, 0])

    async def check(self, key: KeyInfo) -> Verdict:
        if key.requests_per_minute is None and key.tokens_per_minute is None:
            return ALLOW
        minute, retry_after = _window(time.time())
        slot = self._slot(key.id, minute)
        slot[0] += 1
        return _judge(key, slot[0], slot[1], retry_after)

    async def add_tokens(self, counts: dict[int, int]) -> None:
        minute, _ = _window(time.time())
        for key_id, tokens in counts.items():
            self._slot(key_id, minute)[1] += tokens

    async def close(self) -> None:
        return None


Limiter = RedisLimiter | LocalLimiter
