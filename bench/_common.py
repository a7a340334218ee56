"""Shared helpers for the benchmarks: percentiles, a raw HTTP/1.1 client, agent-like payloads,
child processes stopped by PID, the production-like environment and the throw-away database.

Nothing here imports Django (nor psycopg, redis or cryptography at import time), so the load
generator processes stay light.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
PY = str(VENV_PY) if VENV_PY.exists() else sys.executable
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
STARTED = time.monotonic()


def llama_cpp_script() -> Any:
    """scripts/llama_cpp.py as a module (build, image, tiny_gguf; all cached)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "slm_fleet_llama_cpp_script", ROOT / "scripts" / "llama_cpp.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def log(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


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


# --- Processes ------------------------------------------------------------------------------
class Proc:
    """A child in its own session (process group = its PID), stopped by that PID only."""

    tail_lines = 20  # how much of its log tail() gives by default

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], logfile: Path, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.logfile = logfile
        self.handle = logfile.open("ab")
        self.popen = subprocess.Popen(  # noqa: S603 - our own argv
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) did not stop in {grace:.0f} s; SIGKILL")
        # whatever is left of its group (uvicorn workers, Celery pool children, nginx workers)
        self.kill_group()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        self.handle.close()

    def tail(self, lines: int | None = None) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-(self.tail_lines if lines is None else lines) :])


def wait_for(check: Callable[[], bool], timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(step)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so that ``finally`` cleanups run."""

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)


def run_bench(bench: Any, started: float, needs: Sequence[str] = ("postgres", "redis")) -> int:
    """``bench.run()`` then ``bench.cleanup()``, with the services in ``needs`` checked or started
    first (bench/_services.py); prints the JSON line (with ``wall_s`` since ``started``, or the
    error). The exit status: 0, or 1 when the run failed."""
    from _services import Missing, services

    result: dict[str, Any]
    code = 0
    try:
        with services(*needs, log=log):
            try:
                result = bench.run()
            finally:
                bench.cleanup()
    except Missing as exc:
        log(f"cannot run: {exc}")
        result = {"error": str(exc)}
        code = 1
    except BaseException as exc:
        log(f"benchmark failed: {exc.__class__.__name__}: {exc}")
        result = {"error": f"{exc.__class__.__name__}: {exc}"}
        code = 1
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))
    return code


# --- HTTP with urllib -----------------------------------------------------------------------
def http(
    method: str, url: str, token: str | None = None, timeout: float = 30
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)  # noqa: S310 - loopback URL
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return http("GET", url, timeout=2)[0] == 200
        except OSError:
            return False

    return check


# --- The control plane's environment and database -------------------------------------------
def production_env(
    tmp: Path, db: str, redis_url: str, *, drop_hf: bool = False, **extra: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(environment, the variables set here) for the control plane as production runs it:
    ``FLEET_ENV=production`` on PostgreSQL ``db`` and ``redis_url``, state under ``tmp``.
    Inherited FLEET_/database/Redis/secret settings (and HF_ ones with ``drop_hf``) are left
    out; ``extra`` comes last."""
    from cryptography.fernet import Fernet

    prefixes = ("FLEET_", "DATABASE_URL", "REDIS_URL", "SECRET_KEY", *(("HF_",) if drop_hf else ()))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(prefixes)
        and k not in ("ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DJANGO_SETTINGS_MODULE")
    }
    state = tmp / "state"
    state.mkdir(exist_ok=True)
    added = dict(
        DJANGO_SETTINGS_MODULE="config.settings",
        FLEET_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(50),
        FLEET_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        # TLS ends at the reverse proxy; the benches talk plain HTTP on loopback
        FLEET_SSL_REDIRECT="false",
        # no collectstatic here; only affects static files, not the API
        FLEET_STATIC_MANIFEST="false",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}",
        REDIS_URL=redis_url,
        FLEET_STATE_DIR=str(state),
        **extra,
    )
    env.update(added)
    return env, added


def create_database(db: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')


def migrate_and_flush(env: dict[str, str], redis_url: str) -> None:
    """``manage.py migrate`` with ``env``, then an empty Redis database ``redis_url``."""
    subprocess.run(  # noqa: S603
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    import redis

    redis.Redis.from_url(redis_url).flushdb()


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def drop_database(db: str) -> None:
    """DROP DATABASE ``db`` (WITH FORCE), logged; a failure is logged, not raised."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        log(f"dropped database {db}")
    except Exception as exc:
        log(f"could not drop database {db}: {exc}")


def flush_redis(redis_url: str) -> None:
    """FLUSHDB on ``redis_url``; a failure is logged, not raised."""
    try:
        import redis

        redis.Redis.from_url(redis_url).flushdb()
    except Exception as exc:
        log(f"could not flush {redis_url}: {exc}")


class ControlPlaneBench:
    """The database side of a benchmark's ``Bench``: its own PostgreSQL database ``db`` and
    Redis database ``redis_url``, Django set up in this process with ``env``, and the
    release of all that (and of ``procs``) at the end."""

    redis_url: str
    db: str
    env: dict[str, str]
    procs: list[Proc]
    db_created = False
    redis_used = False
    django_ready = False

    def create_database(self) -> None:
        create_database(self.db)
        self.db_created = True
        log(f"created database {self.db}; migrating")
        migrate_and_flush(self.env, self.redis_url)
        self.redis_used = True

    def setup_django(self) -> None:
        setup_django(self.env)
        self.django_ready = True

    def release(self) -> None:
        stop_all(self.procs)
        if self.django_ready:
            from django.db import connections

            connections.close_all()
        if self.db_created:
            drop_database(self.db)
        if self.redis_used:
            flush_redis(self.redis_url)


def admin_token(scope: str) -> tuple[Any, str]:
    """The admin user ``bench-admin`` and the key of its API token ``bench`` (``scope``)."""
    from core import services as core_services
    from core.choices import Role
    from core.history import ChangeContext

    ctx = ChangeContext.system("bench")
    user, _ = core_services.create_user(ctx, username="bench-admin", role=Role.ADMIN)
    _, key = core_services.create_token(ctx, owner=user, name="bench", scope=scope)
    return user, key


def stop_all(procs: list[Proc], grace: float = 5) -> None:
    """Stop ``procs`` newest first and forget them."""
    for proc in list(reversed(procs)):
        proc.stop(grace=grace)
    procs.clear()
