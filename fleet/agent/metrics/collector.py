"""The agent's metrics loop: collect a round every interval, buffer it, send in batches.

One round = the node's figures + each running replica's (runtime metrics normalised with
its adapter's table, container CPU/memory/restarts). Rounds go into a bounded buffer and
everything buffered is sent at once; while the control plane is unreachable the buffer
grows up to ``buffer_rounds`` (default one hour at 5 s) and is flushed when it is back,
so a short outage leaves no gap. Past that bound the oldest rounds are dropped, counted
and logged. A batch the server refuses as malformed (400/413) is dropped with its reason;
retrying cannot help.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from fleet.agent.client import ServerClient, ServerRefused, ServerUnreachable
from fleet.agent.docker_driver import DockerDriver
from fleet.agent.errors import AdapterError
from fleet.agent.gpus import read_gpus
from fleet.agent.metrics.normalise import Scrape, TableError, check_table, normalise
from fleet.agent.metrics.prometheus import MAX_BYTES, ExpositionError, parse
from fleet.agent.metrics.sources import ContainerStats, HostStats
from fleet.agent.state import AgentState
from fleet.agent.version import AGENT_VERSION

log = logging.getLogger("fleet.agent.metrics")

LABEL_REPLICA = "fleet.replica"
LABEL_METRICS = "fleet.metrics"
DEFAULT_INTERVAL_S = 5.0
DEFAULT_BUFFER_ROUNDS = 720
MAX_ROUNDS_PER_REQUEST = 120
SCRAPE_TIMEOUT_S = 2.0
WORKERS = 4


class RoundBuffer:
    """Rounds not yet accepted by the control plane, oldest first, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.rounds: deque[dict[str, Any]] = deque(maxlen=max(1, limit))
        self.dropped = 0
        self.lock = threading.Lock()

    def append(self, entry: dict[str, Any]) -> None:
        with self.lock:
            if len(self.rounds) == self.rounds.maxlen:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning(
                        "metrics buffer full (%d rounds): %d oldest rounds dropped so far",
                        self.rounds.maxlen,
                        self.dropped,
                    )
            self.rounds.append(entry)

    def head(self, count: int) -> list[dict[str, Any]]:
        with self.lock:
            return [self.rounds[i] for i in range(min(count, len(self.rounds)))]

    def drop_head(self, count: int) -> None:
        with self.lock:
            for _ in range(min(count, len(self.rounds))):
                self.rounds.popleft()

    def __len__(self) -> int:
        return len(self.rounds)


class Collector:
    """Collects rounds (``collect``) and sends the buffer (``flush``); no thread of its own."""

    def __init__(
        self,
        *,
        server: str,
        data_dir: Path,
        node_id: str,
        ca_file: str | None = None,
        docker_url: str | None = None,
        buffer_rounds: int = DEFAULT_BUFFER_ROUNDS,
        gpu_reader: Any = read_gpus,
    ) -> None:
        self.data_dir = data_dir
        self.node_id = node_id
        self.client = ServerClient(server, ca_file=ca_file)
        self.driver = DockerDriver(base_url=docker_url)
        self.containers = ContainerStats(self.driver)
        self.host = HostStats(data_dir, gpu_reader)
        self.buffer = RoundBuffer(buffer_rounds)
        self.scrapes: dict[str, Scrape] = {}
        self.session = requests.Session()
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="metrics-scrape")
        self.problems: dict[str, str] = {}  # container -> last problem logged (no log floods)

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.session.close()
        self.driver.close()

    # ------------------------------------------------------------------ collection

    def collect(self) -> dict[str, Any]:
        """One round: the node's figures and every running replica's; appended to the buffer."""
        t_ms = int(time.time() * 1000)
        entry: dict[str, Any] = {"t": t_ms, "node": self.host.read(), "replicas": []}
        try:
            containers = [
                c for c in self.driver.list_managed(self.node_id) if c["state"] == "running"
            ]
        except AdapterError as exc:
            self._problem("engine", f"cannot list containers: {exc.message}")
            containers = []
        replicas = [c for c in containers if _replica_id(c) > 0]
        results = list(self.pool.map(self._replica, replicas))
        entry["replicas"] = [r for r in results if r is not None]
        live = {c["id"] for c in replicas}
        self.containers.forget_except(live)
        for gone in set(self.scrapes) - live:
            del self.scrapes[gone]
        self.buffer.append(entry)
        return entry

    def _replica(self, container: dict[str, Any]) -> dict[str, Any] | None:
        values: dict[str, float] = {}
        try:
            values.update(self.containers.read(container["id"]))
        except AdapterError as exc:
            self._problem(container["name"], f"container stats: {exc.message}")
        values.update(self._runtime(container))
        if not values:
            return None
        return {"replica": _replica_id(container), "values": values}

    def _runtime(self, container: dict[str, Any]) -> dict[str, float]:
        raw = (container.get("labels") or {}).get(LABEL_METRICS)
        if not raw:
            return {}  # a runtime without metrics (Ollama): container figures only
        try:
            spec = json.loads(raw)
            table = check_table(spec.get("table"))
            url = f"http://127.0.0.1:{int(spec['port'])}{spec['path']}"
        except (ValueError, KeyError, TypeError, TableError) as exc:
            self._problem(container["name"], f"unreadable {LABEL_METRICS} label: {exc}")
            return {}
        try:
            answer = self.session.get(url, timeout=SCRAPE_TIMEOUT_S, stream=True)
            body = answer.raw.read(MAX_BYTES + 1, decode_content=True)
            answer.close()
            if answer.status_code != 200:
                raise ExpositionError(f"{url} answered {answer.status_code}")
            if len(body) > MAX_BYTES:
                raise ExpositionError(f"{url} sent more than {MAX_BYTES} bytes")
            current = Scrape(time.monotonic(), parse(body.decode("utf-8", errors="replace")))
        except (requests.RequestException, ExpositionError, OSError) as exc:
            self._problem(container["name"], f"scrape failed: {exc}")
            return {}
        previous = self.scrapes.get(container["id"])
        self.scrapes[container["id"]] = current
        self.problems.pop(container["name"], None)
        return normalise(table, current, previous)

    def _problem(self, key: str, message: str) -> None:
        if self.problems.get(key) != message:
            log.warning("metrics: %s: %s", key, message)
            self.problems[key] = message

    # ------------------------------------------------------------------ sending

    def flush(self) -> bool:
        """Send everything buffered; False when the control plane is unreachable (kept)."""
        state = AgentState.load(self.data_dir)
        if state is not None:
            self.client.credential = state.credential
        while len(self.buffer):
            chunk = self.buffer.head(MAX_ROUNDS_PER_REQUEST)
            try:
                answer = self.client.send_metrics({"agent_version": AGENT_VERSION, "rounds": chunk})
            except ServerUnreachable as exc:
                self._problem("server", f"metrics kept ({len(self.buffer)} rounds): {exc}")
                self.client.session.close()  # a fresh connection next time
                return False
            except ServerRefused as refused:
                if refused.status in (401, 403):
                    self._problem("server", f"metrics refused: {refused.detail}")
                    return False  # the heartbeat loop decides whether the agent stops
                log.error(
                    "metrics batch of %d rounds dropped (%s): %s",
                    len(chunk),
                    refused.status,
                    refused.detail,
                )
            else:
                if answer.get("rejected"):
                    log.warning(
                        "metrics: %s values not stored: %s",
                        answer["rejected"],
                        "; ".join(answer.get("rejected_reasons") or [])[:500],
                    )
                if self.problems.pop("server", None):
                    log.info("metrics delivered again")
            self.buffer.drop_head(len(chunk))
        return True


def _replica_id(container: dict[str, Any]) -> int:
    try:
        return int((container.get("labels") or {}).get(LABEL_REPLICA) or 0)
    except ValueError:
        return 0


class MetricsLoop(threading.Thread):
    """Runs a :class:`Collector` every ``interval`` seconds until stopped."""

    def __init__(self, collector: Collector, interval: float = DEFAULT_INTERVAL_S) -> None:
        super().__init__(name="metrics", daemon=True)
        self.collector = collector
        self.interval = max(0.2, interval)
        self.stopping = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            try:
                self.collector.collect()
                self.collector.flush()
            except Exception:
                log.exception("metrics round failed")
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:  # a slow round (the server timed out): start again from now
                next_at, delay = time.monotonic(), 0.0
            self.stopping.wait(delay)
        self.collector.close()
