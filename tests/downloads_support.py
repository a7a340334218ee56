"""Helpers for the download tests: the upstream hub as FLEET_HF_ENDPOINT, a store per test,
an in-process control worker on a queue of its own, the job reconciler in a thread, and a
counting (and optionally slow) HTTP proxy in front of the live server.

Import the fixtures you need into a test module (``from tests.downloads_support import ...``).
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db import connection

from core.history import ChangeContext
from core.jobs import FINISHED_STATES, Job
from models_catalog.models import CatalogModel, ModelFile, Variant
from tests.fleet.agents import wait_until

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


# --- Catalog --------------------------------------------------------------------------------
def import_variant(ctx: ChangeContext, repo_id: str, **kwargs: Any) -> Variant:
    """Import ``repo_id`` from the test hub (B's real import) and return its first variant."""
    from models_catalog import services

    model = services.import_model(ctx, repo_id=repo_id, **kwargs)
    variant = model.variants.order_by("name").first()
    assert variant is not None, f"{repo_id} has no variant"
    return variant


def variant_with(model: CatalogModel, name: str, paths: list[str]) -> Variant:
    """A variant of ``model`` made of the named files (rows must exist)."""
    files = [ModelFile.objects.get(model=model, path=path) for path in paths]
    variant = Variant.objects.create(
        model=model,
        name=name,
        format="safetensors",
        size=sum(f.size for f in files),
        produced_by={"source": "upstream"},
    )
    variant.files.set(files)
    return variant


def wait_job(
    job_id: int,
    timeout: float = 30,
    states: tuple[str, ...] = tuple(FINISHED_STATES),
    message: str | Callable[[], str] = "",
) -> Job:
    def reached() -> Job | None:
        job = Job.objects.select_related("node").get(pk=job_id)
        return job if job.state in states else None

    def explain() -> str:
        job = Job.objects.get(pk=job_id)
        extra = message() if callable(message) else message
        return f"job {job_id} is {job.state} ({job.error})\n{job.log_tail[-2000:]}\n{extra}"

    return wait_until(reached, timeout, interval=0.1, message=explain)


# --- Control plane pieces in this process ---------------------------------------------------
@pytest.fixture
def upstream(settings: Any, upstream_hub: str) -> str:
    settings.FLEET_HF_ENDPOINT = upstream_hub
    return upstream_hub


@pytest.fixture
def store_dir(settings: Any, tmp_path: Path) -> Path:
    settings.FLEET_MODEL_STORE = tmp_path / "store"
    return Path(settings.FLEET_MODEL_STORE)


@pytest.fixture
def control_worker(settings: Any) -> Iterator[str]:
    """A real Celery worker (thread, solo pool) consuming a control queue of its own."""
    from celery.contrib.testing.worker import start_worker

    from config.celery import app

    queue = f"control-test-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    with start_worker(
        app,
        pool="solo",
        perform_ping_check=False,
        queues=[queue],
        loglevel="WARNING",
        shutdown_timeout=30,
    ):
        yield queue
    with contextlib.suppress(Exception), app.connection() as conn:
        conn.default_channel.queue_delete(queue)


class Reconciler(threading.Thread):
    """``job_services.reconcile()`` every ``interval`` seconds, as beat would run it."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(name="reconciler", daemon=True)
        self.interval = interval
        self.stopping = threading.Event()
        self.runs = 0

    def run(self) -> None:
        from core import job_services

        try:
            while not self.stopping.wait(self.interval):
                with contextlib.suppress(Exception):
                    job_services.reconcile()
                self.runs += 1
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


@pytest.fixture
def reconciler() -> Iterator[Reconciler]:
    thread = Reconciler()
    thread.start()
    yield thread
    thread.stop()


# --- A proxy that counts (and may slow) file transfers -------------------------------------
@dataclass
class Transfer:
    path: str
    range: str | None
    status: int
    bytes: int = 0


@dataclass
class ProxyState:
    target: str
    rate_bps: float | None = None  # throttle GET .../resolve/... bodies to this rate
    transfers: list[Transfer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve_bytes(self, needle: str = "/resolve/") -> int:
        with self.lock:
            return sum(t.bytes for t in self.transfers if needle in t.path)

    def ranges(self, needle: str = "/resolve/") -> list[str]:
        with self.lock:
            return [t.range for t in self.transfers if needle in t.path and t.range]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    state: ProxyState

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _forward(self) -> None:
        target = urlsplit(self.state.target)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = target.netloc
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            self.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Connection", "close")
            self.end_headers()
            transfer = Transfer(self.path, self.headers.get("Range"), response.status)
            counted = self.command == "GET" and "/resolve/" in self.path
            if counted:
                with self.state.lock:
                    self.state.transfers.append(transfer)
            started = time.monotonic()
            while True:
                chunk = response.read(16 * 1024)
                if not chunk:
                    break
                self.wfile.write(chunk)
                if counted:
                    with self.state.lock:
                        transfer.bytes += len(chunk)
                    rate = self.state.rate_bps
                    if rate:
                        due = started + transfer.bytes / rate
                        delay = due - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            upstream.close()

    do_GET = do_HEAD = do_POST = do_PATCH = do_DELETE = do_PUT = _forward


@contextlib.contextmanager
def counting_proxy(target: str) -> Iterator[tuple[str, ProxyState]]:
    state = ProxyState(target=target)
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
