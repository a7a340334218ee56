"""Load generator process for bench/heartbeats.py (not meant to be run by hand).

    python bench/_loadgen.py CONFIG.json

Roles (``role`` in the config):

- ``heartbeats``: every simulated node sends a heartbeat every ``nodes / rate`` seconds at a
  random phase (open loop), over a pool of keep-alive connections.
- ``list``: ``GET /api/v1/nodes/?page_size=50&page=<random>`` at ``rate`` per second.

Latency is measured from the *scheduled* send time, so time spent waiting for a free
connection or a busy server counts (no coordinated omission). Protocol with the parent: print
``READY`` once connected, read the start time (time.monotonic(), shared by all processes on
Linux) from stdin, run, write the summary JSON to ``result`` and print ``DONE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

from _common import Connection, body_parts, iso_now, summary

REQUEST_TIMEOUT_S = 10.0  # what the agent allows (fleet.agent.client.TIMEOUT_S)
DRAIN_S = 12.0  # after the last scheduled request, how long in-flight ones may take


class Recorder:
    def __init__(self, total: int) -> None:
        self.sched = [0.0] * total
        self.start = [0.0] * total
        self.end = [0.0] * total
        self.status = [-1] * total  # -1 not done, 0 transport error / timeout
        self.done = 0
        self.sample_body: bytes | None = None
        self.error_body: bytes | None = None


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(config: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(config.get("seed", 1))  # noqa: S311 - load shape, not secrets
    host, port = "127.0.0.1", int(config["port"])
    warmup, duration = float(config["warmup"]), float(config["duration"])
    horizon = warmup + duration
    role = config["role"]

    # --- the schedule: (time offset from t0, request bytes builder argument) ---
    jobs: list[tuple[float, int]] = []
    if role == "heartbeats":
        credentials: list[str] = json.loads(Path(config["credentials"]).read_text())
        nodes = len(credentials)
        interval = nodes / float(config["rate"])
        heads: list[bytes] = []
        parts: list[tuple[bytes, bytes]] = []
        for index, credential in enumerate(credentials):
            before, after = body_parts(index)
            length = len(before) + 24 + len(after)
            heads.append(
                (
                    "POST /api/v1/agent/heartbeat/ HTTP/1.1\r\n"
                    f"Host: {host}:{port}\r\n"
                    "User-Agent: slm-fleet-agent\r\n"
                    f"Authorization: Bearer {credential}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {length}\r\n\r\n"
                ).encode()
            )
            parts.append((before, after))
            t = rng.uniform(0, interval)
            while t < horizon:
                jobs.append((t, index))
                t += interval

        def build(index: int) -> bytes:
            before, after = parts[index]
            return b"".join((heads[index], before, iso_now().encode(), after))

    else:
        pages = int(config["pages"])
        rate = float(config["rate"])
        step = 1.0 / rate
        t = rng.uniform(0, step)
        while t < horizon:
            jobs.append((t, rng.randrange(1, pages + 1)))
            t += step * rng.uniform(0.5, 1.5)
        token = config["token"]

        def build(page: int) -> bytes:
            return (
                f"GET /api/v1/nodes/?page_size=50&page={page} HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\n"
                f"Authorization: Bearer {token}\r\n"
                "Accept: application/json\r\n\r\n"
            ).encode()

    jobs.sort()
    rec = Recorder(len(jobs))
    connections = [Connection(host, port) for _ in range(int(config["connections"]))]
    for conn in connections:
        await conn.connect()
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    t0 = float(line)

    queue: asyncio.Queue[int] = asyncio.Queue()
    all_done = asyncio.Event()

    async def worker(conn: Connection) -> None:
        while True:
            slot = await queue.get()
            rec.start[slot] = time.monotonic() - t0
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    status, body = await conn.request(build(jobs[slot][1]))
            except Exception:
                conn.close()
                status, body = 0, b""
            rec.end[slot] = time.monotonic() - t0
            rec.status[slot] = status
            if status == 200 and rec.sample_body is None:
                rec.sample_body = body
            elif status != 200 and rec.error_body is None:
                rec.error_body = body or b"(transport error or timeout)"
            rec.done += 1
            if rec.done == len(jobs):
                all_done.set()

    tasks = [loop.create_task(worker(conn)) for conn in connections]
    cpu_at: dict[str, float] = {}
    position = 0
    while position < len(jobs):
        now = time.monotonic() - t0
        if "start" not in cpu_at and now >= warmup:
            cpu_at["start"] = cpu_seconds()
        while position < len(jobs) and jobs[position][0] <= now:
            rec.sched[position] = jobs[position][0]
            queue.put_nowait(position)
            position += 1
        if position < len(jobs):
            await asyncio.sleep(max(0.0, min(jobs[position][0] - now, 0.05)))
    await asyncio.sleep(max(0.0, horizon - (time.monotonic() - t0)))
    cpu_at["end"] = cpu_seconds()
    cpu_at.setdefault("start", cpu_at["end"])
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_done.wait(), DRAIN_S)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in connections:
        conn.close()
    finished_at = time.monotonic() - t0

    # --- figures over the measurement window (scheduled in [warmup, horizon)) ---
    latencies, service, waits = [], [], []
    statuses: dict[str, int] = {}
    unfinished = 0
    for i, (sched, _) in enumerate(jobs):
        if not warmup <= sched < horizon:
            continue
        status = rec.status[i]
        if status == -1:
            unfinished += 1
            latencies.append(finished_at - sched)
            statuses["unfinished"] = statuses.get("unfinished", 0) + 1
            continue
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        latencies.append(rec.end[i] - sched)
        service.append(rec.end[i] - rec.start[i])
        waits.append(rec.start[i] - sched)
    in_window = len(latencies)
    ok_completed = sum(
        1 for i in range(len(jobs)) if rec.status[i] == 200 and warmup <= rec.end[i] < horizon
    )
    buckets: dict[int, list[float]] = {}
    completions: dict[int, int] = {}
    for i, (sched, _) in enumerate(jobs):
        if rec.status[i] == 200:
            buckets.setdefault(int(sched), []).append(rec.end[i] - sched)
        if rec.status[i] != -1:
            completions[int(rec.end[i])] = completions.get(int(rec.end[i]), 0) + 1
    per_second = [
        {
            "s": second,
            "completed": completions.get(second, 0),
            "p99_ms": summary(buckets.get(second, []), 1000)["p99"],
        }
        for second in range(int(warmup), int(horizon))
    ]
    sample: Any = None
    if rec.sample_body:
        try:
            sample = json.loads(rec.sample_body)
        except ValueError:
            sample = rec.sample_body[:300].decode("latin-1")
    if role == "list" and isinstance(sample, dict):
        sample = {"count": sample.get("count"), "results": len(sample.get("results") or [])}
    errors = in_window - statuses.get("200", 0)
    return {
        "role": role,
        "requests": len(jobs),
        "window_s": duration,
        "offered_per_s": round(in_window / duration, 1),
        "completed_ok_per_s": round(ok_completed / duration, 1),
        "latency_ms": summary(latencies, 1000),
        "service_ms": summary(service, 1000),
        "client_wait_ms": summary(waits, 1000),
        "statuses": statuses,
        "errors": errors,
        "unfinished": unfinished,
        "reconnects": sum(conn.reconnects for conn in connections),
        "client_cpu_fraction": round((cpu_at["end"] - cpu_at["start"]) / max(duration, 1e-9), 3),
        "per_second": per_second,
        "sample": sample,
        "error_sample": (rec.error_body or b"")[:300].decode("latin-1") or None,
    }


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(config))
    else:
        result = uvloop.run(run(config))
    Path(config["result"]).write_text(json.dumps(result))
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
