"""The pure pieces: replica choice and ejection, the SSE filter, limits' windows."""

from __future__ import annotations

import asyncio
import json
import time

from gateway.limits import LocalLimiter
from gateway.pool import ReplicaPool
from gateway.table import Endpoint, KeyInfo
from gateway.tally import SseFilter, Tally


def endpoints(n: int) -> list[Endpoint]:
    return [Endpoint(i, f"http://127.0.0.1:{20000 + i}", "/health") for i in range(n)]


async def never(endpoint: Endpoint) -> bool:
    return False


def test_two_choices_prefer_fewer_outstanding_and_skip_ejected():
    async def run() -> None:
        pool = ReplicaPool(5, never)
        a, b, c = endpoints(3)
        for _ in range(5):
            pool.acquire(a)
        picks = {pool.pick([a, b], set()).replica_id for _ in range(20)}  # type: ignore[union-attr]
        assert picks == {b.replica_id}
        pool.failed(b, "refused")
        assert pool.pick([a, b], set()) == a
        assert pool.pick([a, b], {a.replica_id}) is None
        assert pool.ejected() == [b.replica_id]
        assert pool.stats[b.replica_id].backoff == 5
        counts = {e.replica_id: 0 for e in (a, c)}
        for e in (a, c):
            pool.release(e) if e is a else None
        for _ in range(200):
            chosen = pool.pick([a, c], set())
            assert chosen is not None
            counts[chosen.replica_id] += 1
        assert counts[c.replica_id] > counts[a.replica_id]  # a still has 4 outstanding

    asyncio.run(run())


def test_probe_brings_an_ejected_replica_back():
    async def run() -> None:
        answers = [False, True]

        async def probe(endpoint: Endpoint) -> bool:
            return answers.pop(0)

        pool = ReplicaPool(0.05, probe)  # type: ignore[arg-type]
        (a,) = endpoints(1)
        pool.failed(a, "refused")
        assert pool.pick([a], set()) is None
        deadline = time.monotonic() + 2
        while pool.pick([a], set()) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert pool.pick([a], set()) == a
        assert answers == []  # one failed probe (back-off doubled), then back

    asyncio.run(run())


def sse(data: dict) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def test_sse_filter_reads_usage_and_strips_only_the_chunk_it_asked_for():
    first = sse({"choices": [{"delta": {"content": "Hi"}}]})
    usage = sse({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}})
    done = b"data: [DONE]\n\n"
    stream = first + usage + done
    tally = Tally()
    strip = SseFilter(tally, strip_usage=True)
    out = b"".join(strip.feed(stream[i : i + 7]) for i in range(0, len(stream), 7))
    out += strip.finish()
    assert out == first + done
    assert (tally.prompt_tokens, tally.completion_tokens, tally.chunks) == (4, 2, 1)

    kept = Tally()
    passthrough = SseFilter(kept, strip_usage=False)
    out = b"".join(passthrough.feed(stream[i : i + 5]) for i in range(0, len(stream), 5))
    assert out == stream and kept.reported


def test_local_limits_count_requests_and_tokens_per_minute():
    async def run() -> None:
        limiter = LocalLimiter()
        key = KeyInfo(1, "k", True, frozenset(), 2, 10, None)
        assert (await limiter.check(key)).allowed
        assert (await limiter.check(key)).allowed
        refused = await limiter.check(key)
        assert not refused.allowed and 1 <= refused.retry_after <= 60
        other = KeyInfo(2, "t", True, frozenset(), None, 10, None)
        await limiter.add_tokens({2: 10})
        assert "10 tokens per minute" in (await limiter.check(other)).message

    asyncio.run(run())
