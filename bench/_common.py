"""Shared helpers for the benchmarks: percentiles, a raw HTTP/1.1 client, agent-like payloads.

Nothing here imports Django, so the load generator processes stay light.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


# --- Statistics -----------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def summary(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> dict[str, Any]:
    """count, p50, p90, p95, p99, max (values multiplied by ``scale``)."""
    out: dict[str, Any] = {"count": len(values)}
    for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("max", 100)):
        value = percentile(values, q)
        out[name] = None if value is None else round(value * scale, digits)
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Payloads -------------------------------------------------------------------------------
def iso_now() -> str:
    """The agent's sent_at format: millisecond precision, 'Z' suffix (always 24 characters)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


SENT_AT_MARK = "2000-01-01T00:00:00.000Z"  # same width as iso_now(), replaced per request


def inventory(index: int, *, sent_at: str = SENT_AT_MARK) -> dict[str, Any]:
    """A heartbeat shaped like fleet.agent.inventory.collect_inventory on a 2-GPU host.

    Healthy on purpose (Docker reachable, plenty of disk, no clock skew): a steady-state
    heartbeat that takes the fast path, not the history-writing slow path.
    """
    rng = random.Random(index)  # noqa: S311 - deterministic test data
    gib = 1024**3
    node = f"sim-{index:05d}"
    gpus = [
        {
            "name": "NVIDIA L4",
            "uuid": f"GPU-{rng.getrandbits(128):032x}",
            "memory_total_bytes": 24 * gib,
            "memory_used_bytes": (used := rng.randrange(1, 20) * gib),
            "memory_free_bytes": 24 * gib - used,
            "utilization_percent": float(rng.randrange(0, 100)),
            "temperature_c": float(rng.randrange(35, 80)),
        }
        for _ in range(2)
    ]
    containers = [
        {
            "id": f"{rng.getrandbits(256):064x}",
            "name": f"fleet-replica-{rng.randrange(1, 10_000)}",
            "image": "ghcr.io/example/vllm:0.6.3",
            "state": "running",
            "status": "Up 3 hours",
            "labels": {
                "io.slm-fleet.node": str(index),
                "io.slm-fleet.replica": str(rng.randrange(1, 10_000)),
            },
        }
        for _ in range(2)
    ]
    return {
        "agent_version": "0.1.0",
        "sent_at": sent_at,
        "host": {
            "hostname": node,
            "os": "Debian GNU/Linux 12 (bookworm)",
            "kernel": "6.1.0-26-amd64",
            "arch": "x86_64",
        },
        "cpu": {
            "model": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
            "cores": 32,
            "load_1m": round(rng.uniform(0, 8), 2),
            "usage_percent": round(rng.uniform(0, 90), 1),
        },
        "memory": {"total_bytes": 128 * gib, "available_bytes": rng.randrange(8, 120) * gib},
        "disk": {
            "path": "/var/lib/slm-fleet-agent",
            "total_bytes": 2000 * gib,
            "free_bytes": rng.randrange(400, 1800) * gib,
        },
        "gpus": gpus,
        "gpu_driver": {"driver_version": "550.90.07", "cuda_version": "12.4", "error": None},
        "docker": {
            "reachable": True,
            "version": "27.3.1",
            "api_version": "1.47",
            "error": None,
        },
        "containers": containers,
    }


def body_parts(index: int) -> tuple[bytes, bytes]:
    """The JSON body split around sent_at: ``before + sent_at + after``."""
    text = json.dumps(inventory(index), separators=(",", ":"))
    before, _, after = text.partition(SENT_AT_MARK)
    return before.encode(), after.encode()


# --- A raw HTTP/1.1 keep-alive client -------------------------------------------------------
class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time (no pipelining)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def connect(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send a whole request; returns (status, body). Retries once on a stale connection."""
        fresh = self.writer is None
        if fresh:
            await self.connect()
        try:
            return await self._exchange(data)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            # the server may have closed an idle keep-alive connection just before we sent
            if fresh or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                self.close()
                raise
            self.reconnects += 1
            await self.connect()
            return await self._exchange(data)

    async def _exchange(self, data: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            self.close()
            raise HttpError(f"not an HTTP/1.1 answer: {head[:40]!r}")
        status = int(head[9:12])
        lower = head.lower()
        length_at = lower.find(b"\r\ncontent-length:")
        if length_at >= 0:
            end = lower.index(b"\r\n", length_at + 2)
            body = await self.reader.readexactly(int(lower[length_at + 17 : end]))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await self._read_chunked()
        else:
            body = await self.reader.read()
            self.close()
            return status, body
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body

    async def _read_chunked(self) -> bytes:
        assert self.reader is not None
        chunks = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)
