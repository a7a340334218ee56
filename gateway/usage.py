"""Recording usage off the request path: per key, deployment and UTC day, in batches.

Each finished request adds to counters in memory; a background task writes them every
second with one upsert per batch (``INSERT … ON CONFLICT DO UPDATE`` adding to the day's
row) on a worker thread, and passes the tokens to the rate limiter. A failed write keeps
the counters and tries again on the next tick, so a database hiccup loses nothing; they are
also written when the gateway stops.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from django.db import close_old_connections, connection, transaction

from gateway.limits import Limiter

log = logging.getLogger(__name__)

FLUSH_S = 1.0
TOKENS_FLUSH_S = 0.2

UsageKey = tuple[date, int, str]  # (day, key id, deployment name)


@dataclass
class Outcome:
    key_id: int
    deployment: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: bool = False


def write_usage(rows: dict[UsageKey, list[int]]) -> None:
    """Add ``{(day, key, deployment): [requests, errors, prompt, completion]}`` to the rows."""
    from gateway.models import UsageDay

    table = UsageDay._meta.db_table
    sql = (
        f"INSERT INTO {table} "  # noqa: S608 - table name from the model, values as parameters  # nosec B608
        "(day, key_id, deployment, requests, errors, prompt_tokens, completion_tokens) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (day, key_id, deployment) DO UPDATE SET "
        f"requests = {table}.requests + excluded.requests, "
        f"errors = {table}.errors + excluded.errors, "
        f"prompt_tokens = {table}.prompt_tokens + excluded.prompt_tokens, "
        f"completion_tokens = {table}.completion_tokens + excluded.completion_tokens"
    )
    params: list[list[Any]] = [
        [day, key_id, name, *counts] for (day, key_id, name), counts in rows.items()
    ]
    close_old_connections()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, params)
    finally:
        close_old_connections()


class UsageRecorder:
    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.pending: dict[UsageKey, list[int]] = {}
        self.tokens: dict[int, int] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-usage")
        self.task: asyncio.Task[None] | None = None
        self.flushed = asyncio.Event()

    def add(self, outcome: Outcome) -> None:
        day = datetime.now(UTC).date()
        counts = self.pending.setdefault((day, outcome.key_id, outcome.deployment), [0, 0, 0, 0])
        counts[0] += 1
        counts[1] += int(outcome.error)
        counts[2] += outcome.prompt_tokens
        counts[3] += outcome.completion_tokens
        total = outcome.prompt_tokens + outcome.completion_tokens
        if total:
            self.tokens[outcome.key_id] = self.tokens.get(outcome.key_id, 0) + total
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        ticks = round(FLUSH_S / TOKENS_FLUSH_S)
        tick = 0
        while self.pending or self.tokens:
            await asyncio.sleep(TOKENS_FLUSH_S)
            await self.flush_tokens()
            tick += 1
            if tick % ticks == 0:
                await self.flush_rows()

    async def flush_tokens(self) -> None:
        if self.tokens:
            tokens, self.tokens = self.tokens, {}
            await self.limiter.add_tokens(tokens)

    async def flush_rows(self) -> None:
        if not self.pending:
            return
        rows, self.pending = self.pending, {}
        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, write_usage, rows)
        except Exception:
            log.exception("writing %d usage rows failed; retrying on the next tick", len(rows))
            for name, counts in rows.items():
                merged = self.pending.setdefault(name, [0, 0, 0, 0])
                for index, value in enumerate(counts):
                    merged[index] += value

    async def close(self) -> None:
        await self.flush_tokens()
        await self.flush_rows()
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False)
