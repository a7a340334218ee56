"""Live metrics: ingestion cost, sample-to-browser latency for 200 viewers, and a peak rate.

    .venv/bin/python bench/live_metrics.py                 # about 2 minutes
    .venv/bin/python bench/live_metrics.py --viewers 50 --duration 10   # quick

Needs what ``scripts/test`` sets up (.venv, PostgreSQL and Redis on 127.0.0.1). Uses Redis
database 13 (flushed at start and end) and its own database ``fleet_bench_metrics_<pid>``
(dropped at the end). Starts one uvicorn process (the product's ASGI app as production runs
it: PostgreSQL, the Redis channel layer) and drives it from this process (asyncio):

1. **Seed**: ``--nodes`` nodes (100) with real credentials, ``--deployments`` (20) and
   ``--replicas`` (1,000) replica rows spread over them; a viewer user and its session.
2. **Ingest only** (``--duration`` s after a warm-up): every node sends one batch every 5 s
   (random phase) with 10 series for each of its replicas: 1,000 replicas x 10 series / 5 s
   = 2,000 samples/s, the agent's real wire format to ``/api/v1/agent/metrics/``. The
   server process's CPU time over the window gives ``ingest_cpu_pct_of_core``.
3. **With viewers**: ``--viewers`` (200) WebSocket clients (session cookie, jittered
   connects) each subscribe to one deployment group; the same ingestion runs. For every
   point received: latency = receive time - the sample's time (the agent stamps it just
   before sending), and per (group, epoch) the sequence numbers must have no gap
   (``missing``). Messages to a deployment's group carry every point of its replicas.
4. **Peak**: the nodes send every ``5 / --peak-factor`` s (default 3x: 6,000 samples/s
   offered) for ``--peak-duration`` s; ``peak_samples_per_s`` is what was stored
   (accepted by 200 answers) per second; the answers' p99 shows whether it kept up.
5. **Chart query**: the REST snapshot of one deployment's series over 15 minutes (what a
   page resyncs from), timed over 20 calls.

The machine is shared (2 cores): the CPU seconds of the other processes during each phase
are printed next to the figures. The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    PY,
    Connection,
    ControlPlaneBench,
    Proc,
    exit_on_sigterm,
    free_port,
    log,
    percentile,
    production_env,
    run_bench,
    summary,
    wait_for,
)

REDIS_URL = "redis://127.0.0.1:6379/13"
SERIES = (
    "requests_running",
    "requests_waiting",
    "prompt_tokens_per_s",
    "generated_tokens_per_s",
    "time_to_first_token_s",
    "time_per_token_s",
    "kv_cache_usage",
    "cpu_percent",
    "memory_bytes",
    "restarts",
)
INTERVAL_S = 5.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--deployments", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=6.0)
    parser.add_argument("--peak-factor", type=float, default=3.0)
    parser.add_argument("--peak-duration", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=20)
    return parser.parse_args(argv)


class Bench(ControlPlaneBench):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.redis_url = REDIS_URL
        self.db = f"fleet_bench_metrics_{os.getpid()}"
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
        self.env, _ = production_env(self.tmp, self.db, REDIS_URL, FLEET_DB_CONN_MAX_AGE="60")
        self.procs: list[Proc] = []
        self.port = 0
        self.server: Proc | None = None

    # --- seed ---------------------------------------------------------------------------
    def seed(self) -> None:
        from core.choices import Role
        from core.models import User
        from deployments.models import Deployment, DeploymentRevision, Replica
        from fleet.models import NODE_CREDENTIAL_PREFIX, Node, generate_secret, hash_secret
        from models_catalog.models import CatalogModel, Variant

        model = CatalogModel.objects.create(
            repo_id="bench/tiny",
            commit_sha="0" * 40,
            licence="apache-2.0",
            num_layers=2,
            hidden_size=128,
            num_attention_heads=4,
            num_kv_heads=2,
            head_dim=32,
            max_context=512,
            vocab_size=960,
            parameter_count=541312,
            parameter_source="safetensors",
        )
        variant = Variant.objects.create(
            model=model, name="q8", format="gguf", size=1, produced_by={"source": "bench"}
        )
        self.credentials: list[str] = []
        nodes = []
        for index in range(self.args.nodes):
            credential = generate_secret(NODE_CREDENTIAL_PREFIX)
            self.credentials.append(credential)
            nodes.append(
                Node(
                    name=f"bench-{index:04d}",
                    state="ready",
                    credential_prefix=credential[:11],
                    credential_hash=hash_secret(credential),
                )
            )
        nodes = Node.objects.bulk_create(nodes)
        self.deployments = []
        for index in range(self.args.deployments):
            deployment = Deployment.objects.create(name=f"bench-{index}")
            revision = DeploymentRevision.objects.create(
                deployment=deployment,
                number=1,
                spec={},
                variant=variant,
                runtime="llamacpp",
                author_type="system",
                author_name="bench",
            )
            Deployment.objects.filter(pk=deployment.pk).update(current_revision=revision)
            self.deployments.append((deployment.pk, revision.pk))
        replicas = [
            Replica(
                deployment_id=self.deployments[i % len(self.deployments)][0],
                revision_id=self.deployments[i % len(self.deployments)][1],
                slot=i,
                node=nodes[i % len(nodes)],
                state="available",
                host_port=20000 + i,
            )
            for i in range(self.args.replicas)
        ]
        replicas = Replica.objects.bulk_create(replicas)
        self.by_node: dict[int, list[int]] = defaultdict(list)
        for position, replica in enumerate(replicas):
            self.by_node[position % len(nodes)].append(replica.pk)
        viewer = User.objects.create_user("bench-viewer", password="bench-pass-12345")  # noqa: S106
        User.objects.filter(pk=viewer.pk).update(role=Role.VIEWER)
        from django.conf import settings
        from django.test import Client

        client = Client()
        client.force_login(viewer)
        self.cookie = (
            f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        )
        log(
            f"seeded {len(nodes)} nodes, {len(self.deployments)} deployments, "
            f"{len(replicas)} replicas"
        )

    # --- server ---------------------------------------------------------------------------
    def start_server(self) -> None:
        self.port = free_port()
        argv = [
            PY,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        self.server = Proc("uvicorn", argv, self.env, self.tmp / "uvicorn.log")
        self.procs.append(self.server)
        from bench._common import answers

        wait_for(answers(f"http://127.0.0.1:{self.port}/healthz"), 60, "uvicorn")

    def server_cpu(self) -> float:
        assert self.server is not None
        total = 0.0
        root = psutil.Process(self.server.pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    @staticmethod
    def machine_cpu() -> float:
        times = psutil.cpu_times()
        return times.user + times.system + times.nice

    # --- load -----------------------------------------------------------------------------
    def body(self, node: int) -> bytes:
        t = int(time.time() * 1000)
        replicas = [
            {"replica": rid, "values": {name: round(random.random() * 100, 3) for name in SERIES}}  # noqa: S311
            for rid in self.by_node[node]
        ]
        return json.dumps(
            {"agent_version": "bench", "rounds": [{"t": t, "node": {}, "replicas": replicas}]}
        ).encode()

    async def ingest(self, until: float, interval: float, stats: dict[str, Any]) -> None:
        queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
        start = time.monotonic()
        phases = [random.random() * interval for _ in range(self.args.nodes)]  # noqa: S311

        async def schedule() -> None:
            k = 0
            while True:
                due = sorted((start + phases[n] + k * interval, n) for n in range(self.args.nodes))
                for at, node in due:
                    if at >= until:
                        return
                    await asyncio.sleep(max(0.0, at - time.monotonic()))
                    queue.put_nowait((node, at))
                k += 1

        async def worker() -> None:
            connection = Connection("127.0.0.1", self.port)
            while True:
                node, at = await queue.get()
                body = self.body(node)
                request = (
                    f"POST /api/v1/agent/metrics/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {self.credentials[node]}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body
                try:
                    status, answer = await connection.request(request)
                except Exception as exc:  # counted; the run goes on
                    stats["errors"] += 1
                    stats["last_error"] = repr(exc)
                    queue.task_done()
                    continue
                stats["latency_s"].append(time.monotonic() - at)
                if status == 200:
                    stats["accepted"] += json.loads(answer)["accepted"]
                else:
                    stats["errors"] += 1
                    stats["last_error"] = f"{status} {answer[:200]!r}"
                queue.task_done()

        workers = [asyncio.create_task(worker()) for _ in range(self.args.connections)]
        await schedule()
        await asyncio.wait_for(queue.join(), timeout=60)
        for task in workers:
            task.cancel()

    async def viewer(self, index: int, results: dict[str, Any], ready: asyncio.Event) -> None:
        import websockets

        deployment = self.deployments[index % len(self.deployments)][0]
        group = f"deployment.{deployment}"
        await asyncio.sleep(random.random() * 3)  # noqa: S311 - jittered connects
        for attempt in range(8):
            try:
                socket = await websockets.connect(
                    f"ws://127.0.0.1:{self.port}/ws/metrics/",
                    additional_headers={
                        "Cookie": self.cookie,
                        "Origin": f"http://127.0.0.1:{self.port}",
                    },
                    open_timeout=20,
                    max_size=None,
                )
                break
            except Exception:
                await asyncio.sleep(random.random() * 2 ** min(attempt, 4) * 0.5)  # noqa: S311
        else:
            results["failed_connects"] += 1
            return
        last: dict[str, int] = {}
        try:
            await socket.send(json.dumps({"subscribe": group}))
            results["connected"] += 1
            if results["connected"] >= self.args.viewers - results["failed_connects"]:
                ready.set()
            async for raw in socket:
                received = time.time() * 1000
                message = json.loads(raw)
                if message.get("type") != "metrics.points":
                    continue
                payload = message["payload"]
                if not results["measuring"]:
                    last[payload["epoch"]] = payload["seq"]
                    continue
                previous = last.get(payload["epoch"])
                if previous is not None and payload["seq"] != previous + 1:
                    results["missing"] += payload["seq"] - previous - 1
                last[payload["epoch"]] = payload["seq"]
                results["messages"] += 1
                for row in payload["points"]:
                    results["latency_ms"].append(received - row[6])
        except Exception as exc:
            results["socket_errors"] += 1
            results["last_socket_error"] = repr(exc)
        finally:
            await socket.close()

    def phase_cpu(self, run: Any) -> tuple[Any, float, float, float]:
        cpu0, machine0, wall0 = self.server_cpu(), self.machine_cpu(), time.monotonic()
        result = run()
        wall = time.monotonic() - wall0
        server = self.server_cpu() - cpu0
        others = max(0.0, self.machine_cpu() - machine0 - server)
        return result, server / wall * 100, others / wall * 100, wall

    # --- run --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.create_database()
        self.setup_django()
        self.seed()
        self.start_server()
        out: dict[str, Any] = {
            "nodes": self.args.nodes,
            "replicas": self.args.replicas,
            "series_per_replica": len(SERIES),
            "offered_samples_per_s": self.args.replicas * len(SERIES) / INTERVAL_S,
            "cores": psutil.cpu_count(),
        }

        # 2. ingest only
        log(f"warm-up {self.args.warmup:.0f} s, then ingest only for {self.args.duration:.0f} s")
        asyncio.run(self.ingest(time.monotonic() + self.args.warmup, INTERVAL_S, self.new_stats()))
        stats = self.new_stats()
        _, server_pct, others_pct, wall = self.phase_cpu(
            lambda: asyncio.run(
                self.ingest(time.monotonic() + self.args.duration, INTERVAL_S, stats)
            )
        )
        out["ingest_cpu_pct_of_core"] = round(server_pct, 1)
        out["ingest_samples_per_s"] = round(stats["accepted"] / wall, 1)
        out["ingest_post_ms"] = summary(stats["latency_s"], 1000)
        out["ingest_errors"] = stats["errors"]
        out["other_processes_cpu_pct_ingest"] = round(others_pct, 1)
        log(
            f"ingest only: {out['ingest_samples_per_s']} samples/s, server CPU "
            f"{server_pct:.1f} % of a core (others, load generator included: {others_pct:.0f} %)"
        )

        # 3. with viewers
        results: dict[str, Any] = defaultdict(int)
        results["latency_ms"] = []
        results["measuring"] = False
        stats = self.new_stats()

        async def with_viewers() -> None:
            ready = asyncio.Event()
            viewers = [
                asyncio.create_task(self.viewer(i, results, ready))
                for i in range(self.args.viewers)
            ]
            try:
                await asyncio.wait_for(ready.wait(), 60)
            except TimeoutError:
                log(f"only {results['connected']} viewers connected")
            await self.ingest(time.monotonic() + 3, INTERVAL_S, self.new_stats())  # settle
            results["measuring"] = True
            await self.ingest(time.monotonic() + self.args.duration, INTERVAL_S, stats)
            await asyncio.sleep(1.0)  # the last messages in flight
            results["measuring"] = False
            for task in viewers:
                task.cancel()
            await asyncio.gather(*viewers, return_exceptions=True)

        _, server_pct, others_pct, wall = self.phase_cpu(lambda: asyncio.run(with_viewers()))
        latencies = results["latency_ms"]
        out["viewers"] = results["connected"]
        out["viewer_connect_failures"] = results["failed_connects"]
        out["points_delivered"] = len(latencies)
        out["messages_delivered"] = results["messages"]
        out["latency_p50_ms"] = round(percentile(latencies, 50) or 0, 1)
        out["latency_p99_ms"] = round(percentile(latencies, 99) or 0, 1)
        out["latency_max_ms"] = round(max(latencies) if latencies else 0, 1)
        out["missing"] = results["missing"]
        out["socket_errors"] = results["socket_errors"]
        out["server_cpu_pct_of_core_with_viewers"] = round(server_pct, 1)
        out["other_processes_cpu_pct_viewers"] = round(others_pct, 1)
        log(
            f"{out['viewers']} viewers: p50 {out['latency_p50_ms']} ms, "
            f"p99 {out['latency_p99_ms']} ms, missing {out['missing']}, "
            f"server CPU {server_pct:.0f} % (others {others_pct:.0f} %)"
        )

        # 4. peak
        stats = self.new_stats()
        interval = INTERVAL_S / self.args.peak_factor
        _, server_pct, others_pct, wall = self.phase_cpu(
            lambda: asyncio.run(
                self.ingest(time.monotonic() + self.args.peak_duration, interval, stats)
            )
        )
        out["peak_offered_samples_per_s"] = round(
            out["offered_samples_per_s"] * self.args.peak_factor
        )
        out["peak_samples_per_s"] = round(stats["accepted"] / wall, 1)
        out["peak_post_ms"] = summary(stats["latency_s"], 1000)
        out["peak_errors"] = stats["errors"]
        out["peak_server_cpu_pct_of_core"] = round(server_pct, 1)
        log(
            f"peak: {out['peak_samples_per_s']} samples/s stored "
            f"of {out['peak_offered_samples_per_s']} offered"
        )

        # 5. the chart query a page resyncs from
        timings = []
        for _ in range(20):
            started = time.monotonic()
            self.snapshot_call()
            timings.append(time.monotonic() - started)
        out["snapshot_15min_ms"] = summary(timings, 1000)
        return out

    def snapshot_call(self) -> bytes:
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v1/metrics/?deployment={self.deployments[0][0]}"
            "&names=generated_tokens_per_s&window=900",
            headers={"Cookie": self.cookie},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return bytes(answer.read())

    @staticmethod
    def new_stats() -> dict[str, Any]:
        return {"accepted": 0, "errors": 0, "latency_s": [], "last_error": ""}

    def cleanup(self) -> None:
        self.release()


def main(argv: list[str] | None = None) -> int:
    exit_on_sigterm()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    return run_bench(Bench(args), started)


if __name__ == "__main__":
    sys.exit(main())
