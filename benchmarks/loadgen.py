"""The load generator of benchmark runs: OpenAI-compatible requests at a concurrency or a rate.

No Django here: the control worker's benchmark job and ``bench/serving_bench.py`` drive the
same code. One *level* is a closed loop of ``concurrency`` clients (each sends its next
request when the last one ended) or an open loop at ``rate`` requests/s (constant spacing,
as guidellm's ``constant`` profile, or Poisson arrivals); it ends after ``requests``
requests or ``duration_s`` seconds, whichever is set. Warm-up requests go first and are not
counted.

Per request it records, with a monotonic clock: time to first token (the first chunk that
carries text), every gap between text chunks, end-to-end latency, and the tokens, taken from
the answer's ``usage`` when the server sends one (streamed: ``stream_options.include_usage``)
and otherwise counted as text chunks. :func:`summarize` turns the samples into the figures
of docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

ERROR_PAUSE_S = 0.05
WORDS = (
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "small",
    "models",
    "answer",
    "questions",
    "about",
    "rivers",
    "mountains",
    "cities",
    "numbers",
    "colours",
    "music",
    "and",
    "the",
    "weather",
    "of",
    "distant",
    "places",
)


@dataclass(frozen=True)
class Target:
    """Where requests go: ``base_url`` ends before ``/chat/completions`` (e.g. ``…/v1``)."""

    base_url: str
    model: str = ""
    api_key: str = ""
    label: str = ""


@dataclass(frozen=True)
class Load:
    """What each request asks for."""

    prompt_tokens: int = 64
    output_tokens: int = 64
    stream: bool = True
    api: str = "chat"  # "chat" or "completions"
    prompts: tuple[str, ...] = ()  # a prompt set; empty: a synthetic prompt of prompt_tokens
    ignore_eos: bool = True
    temperature: float = 0.0
    timeout_s: float = 120.0
    seed: int = 0


@dataclass(frozen=True)
class Level:
    concurrency: int | None = None
    rate: float | None = None
    arrivals: str = "constant"  # or "poisson" (rate levels only)
    requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0

    @property
    def label(self) -> str:
        if self.concurrency is not None:
            return f"concurrency {self.concurrency}"
        return f"{self.rate:g} req/s"


@dataclass
class Sample:
    started: float  # monotonic seconds
    ended: float = 0.0
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int = 0
    tokens_from: str = "chunks"  # "usage" when the server reported its count
    # the runtime's own time to first token, where it reports one (llama.cpp's ``timings``:
    # prompt processing plus one decode step), in seconds; a check on the client's figure
    server_ttft: float | None = None
    error: str = ""  # a kind: "http_503", "timeout", "connection", "stream", …
    detail: str = ""

    @property
    def latency(self) -> float:
        return self.ended - self.started


def synthetic_prompt(tokens: int, index: int = 0) -> str:
    """About ``tokens`` tokens of plain words (one common English word is about one token)."""
    rng = random.Random(index)  # noqa: S311 (prompt words, not secrets)
    return " ".join(rng.choice(WORDS) for _ in range(max(1, tokens)))


def request_body(target: Target, load: Load, index: int) -> dict[str, Any]:
    prompt = (
        load.prompts[index % len(load.prompts)]
        if load.prompts
        else synthetic_prompt(load.prompt_tokens, load.seed * 100003 + index)
    )
    body: dict[str, Any] = {
        "max_tokens": load.output_tokens,
        "temperature": load.temperature,
        "stream": load.stream,
    }
    if target.model:
        body["model"] = target.model
    if load.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if load.stream:
        body["stream_options"] = {"include_usage": True}
    if load.ignore_eos:
        # llama.cpp and vLLM read it; runtimes that do not know it ignore it
        body["ignore_eos"] = True
    return body


def _text_of(choice: dict[str, Any]) -> str:
    if "text" in choice:  # completions
        return str(choice.get("text") or "")
    delta = choice.get("delta") or choice.get("message") or {}
    if isinstance(delta, dict):
        return str(delta.get("content") or delta.get("reasoning_content") or "")
    return ""


def _take_timings(sample: Sample, timings: Any) -> None:
    if isinstance(timings, dict) and isinstance(timings.get("prompt_ms"), int | float):
        per_token = timings.get("predicted_per_token_ms") or 0.0
        sample.server_ttft = (float(timings["prompt_ms"]) + float(per_token)) / 1000.0


def _take_usage(sample: Sample, usage: Any) -> None:
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        sample.output_tokens = int(usage["completion_tokens"])
        sample.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        sample.tokens_from = "usage"


async def one_request(
    session: aiohttp.ClientSession, target: Target, load: Load, index: int
) -> Sample:
    """Send one request and measure it; a failure is a sample with ``error`` set.

    A pooled keep-alive connection that the server closed after its last answer (llama.cpp's
    server does so after a streamed one) fails before any byte of an answer: the request
    never reached the server, so it is sent once more on a new connection, and the clock
    restarts (as the gateway's upstream client does).
    """
    path = "/chat/completions" if load.api == "chat" else "/completions"
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    body = request_body(target, load, index)
    url = target.base_url.rstrip("/") + path
    sample, stale = await _attempt(session, url, body, headers, load)
    if stale:  # other pooled connections may be stale too: a new one, certainly fresh
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
            sample, _ = await _attempt(fresh, url, body, headers, load)
    return sample


async def _attempt(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    load: Load,
) -> tuple[Sample, bool]:
    """(the sample, whether it failed on a stale pooled connection before any answer)."""
    sample = Sample(started=time.monotonic())
    chunks = 0
    answered = False
    try:
        timeout = aiohttp.ClientTimeout(total=load.timeout_s)
        async with session.post(url, json=body, headers=headers, timeout=timeout) as answer:
            answered = True
            if answer.status >= 400:
                text = (await answer.text())[:300]
                sample.error, sample.detail = f"http_{answer.status}", text
                return sample, False
            if not load.stream:
                data = await answer.json(content_type=None)
                now = time.monotonic()
                sample.ttft = now - sample.started
                text = "".join(_text_of(c) for c in data.get("choices") or [])
                _take_usage(sample, data.get("usage"))
                _take_timings(sample, data.get("timings"))
                if sample.tokens_from != "usage":
                    sample.output_tokens = len(text.split())
                return sample, False
            last = sample.started
            buffer = b""
            async for piece in answer.content.iter_any():
                buffer += piece
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        continue
                    event = json.loads(payload)
                    if event.get("error"):
                        sample.error, sample.detail = "stream", str(event["error"])[:300]
                        return sample, False
                    _take_usage(sample, event.get("usage"))
                    _take_timings(sample, event.get("timings"))
                    if any(_text_of(c) for c in event.get("choices") or []):
                        now = time.monotonic()
                        if sample.ttft is None:
                            sample.ttft = now - sample.started
                        else:
                            sample.gaps.append(now - last)
                        last = now
                        chunks += 1
            if sample.tokens_from != "usage":
                sample.output_tokens = chunks
            if sample.ttft is None:
                sample.error, sample.detail = "empty", "the answer carried no text"
    except TimeoutError:
        sample.error, sample.detail = "timeout", f"no complete answer in {load.timeout_s:g} s"
    except aiohttp.ClientConnectionError as exc:
        sample.error, sample.detail = "connection", str(exc)[:300]
        if not answered and not isinstance(exc, aiohttp.ClientConnectorError):
            sample.ended = time.monotonic()
            return sample, True
    except (aiohttp.ClientError, ValueError) as exc:
        sample.error, sample.detail = "protocol", f"{type(exc).__name__}: {exc}"[:300]
    finally:
        sample.ended = time.monotonic()
    return sample, False


@dataclass
class LevelRun:
    level: Level
    samples: list[Sample]
    started: float
    ended: float
    stopped: bool = False  # cut short by ``should_stop``


async def run_level(
    target: Target,
    load: Load,
    level: Level,
    *,
    on_sample: Callable[[Sample], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    first_index: int = 0,
) -> LevelRun:
    """Run one level; ``should_stop`` is polled about every 50 ms (cancel, lease lost)."""
    if (level.concurrency is None) == (level.rate is None):
        raise ValueError("a level has either a concurrency or a rate")
    if level.requests is None and level.duration_s is None:
        raise ValueError("a level needs a request count or a duration")
    parallel = level.concurrency or max(1, math.ceil((level.rate or 1) * load.timeout_s))
    connector = aiohttp.TCPConnector(limit=min(parallel, 1024), force_close=False)
    samples: list[Sample] = []
    counter = iter(range(first_index, first_index + 10**9))
    stopped = False
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(level.warmup_requests):
            await one_request(session, target, load, next(counter))
        started = time.monotonic()
        deadline = started + level.duration_s if level.duration_s is not None else math.inf
        budget = level.requests if level.requests is not None else 10**9
        issued = 0

        def take_slot() -> bool:
            nonlocal issued
            if issued >= budget or time.monotonic() >= deadline or stopped:
                return False
            issued += 1
            return True

        def keep(sample: Sample) -> None:
            samples.append(sample)
            if on_sample is not None:
                on_sample(sample)

        async def client() -> None:
            while take_slot():
                sample = await one_request(session, target, load, next(counter))
                keep(sample)
                if sample.error:
                    await asyncio.sleep(ERROR_PAUSE_S)  # a refused connection fails at once

        async def watch(tasks: Sequence[asyncio.Future[Any]]) -> None:
            nonlocal stopped
            while not all(t.done() for t in tasks):
                if should_stop is not None and should_stop():
                    stopped = True
                    for t in tasks:
                        t.cancel()
                    return
                await asyncio.sleep(0.05)

        if level.concurrency is not None:
            tasks: list[asyncio.Future[Any]] = [
                asyncio.ensure_future(client()) for _ in range(level.concurrency)
            ]
        else:
            tasks = [
                asyncio.ensure_future(
                    _open_loop(level, take_slot, keep, session, target, load, counter)
                )
            ]
        watcher = asyncio.ensure_future(watch(tasks))
        await asyncio.gather(*tasks, return_exceptions=True)
        watcher.cancel()
        ended = time.monotonic()
    return LevelRun(level, samples, started, ended, stopped)


async def _open_loop(
    level: Level,
    take_slot: Callable[[], bool],
    keep: Callable[[Sample], None],
    session: aiohttp.ClientSession,
    target: Target,
    load: Load,
    counter: Any,
) -> None:
    """Arrivals at ``level.rate`` whatever the answers take (each request its own task)."""
    rate = float(level.rate or 1.0)
    rng = random.Random(load.seed)  # noqa: S311 (arrival times)
    flying: set[asyncio.Task[None]] = set()
    next_at = time.monotonic()

    async def fire() -> None:
        keep(await one_request(session, target, load, next(counter)))

    try:
        while take_slot():
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(fire())
            flying.add(task)
            task.add_done_callback(flying.discard)
            gap = rng.expovariate(rate) if level.arrivals == "poisson" else 1.0 / rate
            next_at += gap
        if flying:
            await asyncio.gather(*flying, return_exceptions=True)
    finally:
        for task in flying:
            task.cancel()


# --- Figures --------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 2)


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50": _ms(percentile(values, 50)),
        "p90": _ms(percentile(values, 90)),
        "p99": _ms(percentile(values, 99)),
        "mean": _ms(sum(values) / len(values)) if values else None,
    }


def summarize(run: LevelRun) -> dict[str, Any]:
    """The figures of one level (times in ms, rates per second of the level's wall time)."""
    ok = [s for s in run.samples if not s.error]
    failed = [s for s in run.samples if s.error]
    # wall time from the first request's start to the last answer's end
    if run.samples:
        wall = max(s.ended for s in run.samples) - min(s.started for s in run.samples)
    else:
        wall = run.ended - run.started
    wall = max(wall, 1e-9)
    output = sum(s.output_tokens for s in ok)
    prompt = sum(s.prompt_tokens for s in ok)
    gaps = [g for s in ok for g in s.gaps]
    per_token = [
        (s.latency - (s.ttft or 0.0)) / (s.output_tokens - 1) for s in ok if s.output_tokens > 1
    ]
    busy = sum(s.latency for s in run.samples)
    level = run.level
    return {
        "label": level.label,
        "concurrency": level.concurrency,
        "rate": level.rate,
        "requests": len(run.samples),
        "completed": len(ok),
        "errors": len(failed),
        "error_kinds": dict(Counter(s.error for s in failed)),
        "error_example": failed[0].detail if failed else "",
        "duration_s": round(wall, 3),
        "ttft_ms": _spread([s.ttft for s in ok if s.ttft is not None]),
        "itl_ms": _spread(gaps),
        "tpot_ms": _spread(per_token),
        "latency_ms": _spread([s.latency for s in ok]),
        "output_tokens": output,
        "prompt_tokens": prompt,
        "tokens_from": _tokens_from(ok),
        "server_ttft_ms": _spread([s.server_ttft for s in ok if s.server_ttft is not None]),
        "output_tokens_per_s": round(output / wall, 2),
        "total_tokens_per_s": round((output + prompt) / wall, 2),
        "requests_per_s": round(len(ok) / wall, 3),
        "mean_concurrency": round(busy / wall, 2),
        "stopped": run.stopped,
    }


def _tokens_from(ok: Sequence[Sample]) -> str:
    sources = {s.tokens_from for s in ok}
    return sources.pop() if len(sources) == 1 else ("mixed" if sources else "")
