"""Prometheus export: the cost of a scrape and of service discovery at fleet scale.

1. Creates the database ``fleet_bench_prom_<pid>`` (dropped at the end), uses Redis database 9
   (flushed at start and end), seeds ``--nodes`` ready nodes with GPU and disk inventories,
   ``--deployments`` llama.cpp deployments of ``--replicas`` available replicas each (one
   rollout per deployment, a failed one every tenth), ``--jobs`` finished download jobs, and
   a backlog on a tenth of the node queues.
2. In this process: queries and CPU time of one snapshot + exposition
   (``generate_latest`` of the fleet registry), median over ``--rounds``.
3. Starts uvicorn as production runs it (one worker) and times, sequentially, ``--rounds``
   requests each of ``GET /healthz`` (the baseline: the same server, no work),
   ``GET /api/v1/prometheus/metrics/`` and ``GET /api/v1/prometheus/targets/`` with the
   scrape token.
4. Starts Debian's Prometheus on a free port with both jobs (1 s interval) and reads, after
   ``--prometheus-seconds``, the median ``scrape_duration_seconds`` it measured for each job
   and how many replica targets it found up (none answer here: their ports are closed, so the
   replica job's targets are down; what is measured is discovery).

Everything it starts runs in its own process group and is stopped by PID. The last output
line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

from _common import (  # noqa: E402
    PY,
    ROOT,
    ControlPlaneBench,
    Proc,
    answers,
    exit_on_sigterm,
    free_port,
    http,
    log,
    production_env,
    run_bench,
    summary,
    wait_for,
)

REDIS_URL = "redis://127.0.0.1:6379/9"
GiB = 1024**3


class Bench(ControlPlaneBench):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-prom-"))
        self.db = f"fleet_bench_prom_{os.getpid()}"
        self.redis_url = REDIS_URL
        self.procs: list[Proc] = []
        self.token = secrets.token_urlsafe(32)
        self.env, _ = production_env(
            self.tmp, self.db, REDIS_URL, FLEET_PROMETHEUS_TOKEN=self.token
        )

    # --- seed -----------------------------------------------------------------------------
    def seed(self) -> dict[str, int]:
        from django.utils import timezone

        from core.jobs import Job, JobKind, JobState
        from core.redis_client import redis_client
        from deployments.choices import ReplicaState, RolloutState
        from deployments.models import Deployment, DeploymentRevision, Replica, Rollout
        from fleet.models import Node
        from models_catalog.models import CatalogModel, Variant

        args = self.args
        now = timezone.now()
        nodes = Node.objects.bulk_create(
            Node(
                name=f"node-{i:05d}",
                state="ready",
                last_heartbeat_at=now,
                credential_prefix="slmn_b",
                credential_hash=f"bench-{i}",
                inventory={
                    "host": {"hostname": f"node-{i}", "address": "127.0.0.1"},
                    "disk": {"total_bytes": 500 * GiB, "free_bytes": (i % 100) * 5 * GiB},
                    "gpus": [
                        {
                            "index": g,
                            "name": "NVIDIA L4",
                            "memory_total_bytes": 24 * GiB,
                            "memory_free_bytes": ((i + g) % 24) * GiB,
                        }
                        for g in range(2)
                    ],
                },
            )
            for i in range(args.nodes)
        )
        model = CatalogModel.objects.create(repo_id="bench/model", commit_sha="a" * 40)
        variant = Variant.objects.create(model=model, name="model-Q4_K_M.gguf", format="gguf")
        deployments = Deployment.objects.bulk_create(
            Deployment(name=f"dep-{i:04d}", desired_replicas=args.replicas)
            for i in range(args.deployments)
        )
        revisions = DeploymentRevision.objects.bulk_create(
            DeploymentRevision(
                deployment=d,
                number=1,
                spec={"variant": variant.pk, "runtime": "llamacpp", "replicas": args.replicas},
                variant=variant,
                runtime="llamacpp",
                author_type="system",
                author_name="bench",
            )
            for d in deployments
        )
        for deployment, revision in zip(deployments, revisions, strict=True):
            deployment.current_revision = revision
            deployment.stable_revision = revision
        Deployment.objects.bulk_update(deployments, ["current_revision", "stable_revision"])
        replicas = Replica.objects.bulk_create(
            Replica(
                deployment=d,
                revision=r,
                slot=s,
                node=nodes[(i * args.replicas + s) % len(nodes)],
                state=ReplicaState.AVAILABLE,
                host_port=20000 + (i * args.replicas + s) % 9000,
            )
            for i, (d, r) in enumerate(zip(deployments, revisions, strict=True))
            for s in range(args.replicas)
        )
        Rollout.objects.bulk_create(
            Rollout(
                deployment=d,
                to_revision=r,
                state=RolloutState.FAILED if i % 10 == 0 else RolloutState.SUCCEEDED,
                finished_at=now,
            )
            for i, (d, r) in enumerate(zip(deployments, revisions, strict=True))
        )
        Job.objects.bulk_create(
            Job(
                kind=JobKind.DOWNLOAD,
                state=JobState.SUCCEEDED,
                node=nodes[i % len(nodes)],
                target_type="models_catalog.variant",
                target_id=str(variant.pk),
                target_name=str(variant),
                actor_type="system",
                actor_name="bench",
            )
            for i in range(args.jobs)
        )
        client = redis_client()
        with client.pipeline(transaction=False) as pipe:
            for node in nodes[:: max(1, len(nodes) // (len(nodes) // 10 or 1))]:
                pipe.rpush(f"node.{node.pk}", *[b"{}"] * 5)
            pipe.execute()
        return {"nodes": len(nodes), "replicas": len(replicas), "deployments": len(deployments)}

    # --- in-process cost ----------------------------------------------------------------
    def in_process(self) -> dict[str, Any]:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext
        from prometheus_client import generate_latest

        from monitoring.prometheus.collectors import FLEET_REGISTRY

        times: list[float] = []
        cpu: list[float] = []
        size = 0
        with CaptureQueriesContext(connection) as queries:
            generate_latest(FLEET_REGISTRY)
        for _ in range(self.args.rounds):
            started, cpu_started = time.perf_counter(), time.process_time()
            size = len(generate_latest(FLEET_REGISTRY))
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
        return {
            "queries_per_scrape": len(queries.captured_queries),
            "collect_ms": summary(times, 1000),
            "collect_cpu_ms_p50": round(statistics.median(cpu) * 1000, 1),
            "exposition_bytes": size,
        }

    # --- over HTTP ------------------------------------------------------------------------
    def over_http(self) -> dict[str, Any]:
        port = free_port()
        argv = [PY, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--workers", "1", "--no-access-log"]
        self.procs.append(Proc("uvicorn", argv, self.env, self.tmp / "uvicorn.log"))
        base = f"http://127.0.0.1:{port}"
        wait_for(answers(f"{base}/healthz"), 60, "uvicorn")
        self.base = base
        figures: dict[str, Any] = {}
        for name, path, token in (
            ("healthz", "/healthz", None),
            ("metrics", "/api/v1/prometheus/metrics/", self.token),
            ("targets", "/api/v1/prometheus/targets/", self.token),
        ):
            http("GET", base + path, token)  # warm up
            times = []
            for _ in range(self.args.rounds):
                started = time.perf_counter()
                status, _, body = http("GET", base + path, token)
                times.append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
            figures[f"{name}_ms"] = summary(times, 1000)
        refused, _, _ = http("GET", base + "/api/v1/prometheus/metrics/", None)
        figures["anonymous_status"] = refused
        return figures

    # --- a real Prometheus ----------------------------------------------------------------
    def prometheus(self) -> dict[str, Any]:
        import yaml

        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            raise RuntimeError("prometheus is not installed: run scripts/test (ensure_prometheus)")
        folder = self.tmp / "prometheus"
        folder.mkdir()
        auth = {"type": "Bearer", "credentials": self.token}
        host = self.base.split("://", 1)[1]
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": "slm-fleet",
                    "metrics_path": "/api/v1/prometheus/metrics/",
                    "authorization": auth,
                    "static_configs": [{"targets": [host]}],
                },
                {
                    "job_name": "slm-fleet-replicas",
                    "scrape_interval": "10s",
                    "http_sd_configs": [
                        {
                            "url": f"{self.base}/api/v1/prometheus/targets/",
                            "refresh_interval": "5s",
                            "authorization": auth,
                        }
                    ],
                },
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        argv = [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        self.procs.append(Proc("prometheus", argv, self.env, self.tmp / "prometheus.log"))
        api = f"http://127.0.0.1:{port}/api/v1"
        wait_for(answers(f"http://127.0.0.1:{port}/-/ready"), 30, "prometheus")
        time.sleep(self.args.prometheus_seconds)

        def query(expr: str) -> list[dict[str, Any]]:
            url = f"{api}/query?" + urllib.parse.urlencode({"query": expr})
            with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
                import json

                return list(json.loads(answer.read())["data"]["result"])

        window = f"{self.args.prometheus_seconds - 2}s"
        scrape = query(
            f'quantile_over_time(0.5, scrape_duration_seconds{{job="slm-fleet"}}[{window}])'
        )
        up = query('up{job="slm-fleet"}')
        discovered = query('count(up{job="slm-fleet-replicas"})')
        samples = query('scrape_samples_scraped{job="slm-fleet"}')
        return {
            "prometheus_scrape_p50_ms": round(float(scrape[0]["value"][1]) * 1000, 1)
            if scrape
            else None,
            "prometheus_fleet_up": float(up[0]["value"][1]) if up else None,
            "prometheus_discovered_targets": int(float(discovered[0]["value"][1]))
            if discovered
            else 0,
            "samples_per_scrape": int(float(samples[0]["value"][1])) if samples else None,
        }

    def run(self) -> dict[str, Any]:
        self.create_database()
        self.setup_django()
        log("seeding")
        seeded = self.seed()
        log(f"seeded {seeded}")
        local = self.in_process()
        log(f"in process: {local}")
        remote = self.over_http()
        log(f"over HTTP: {remote}")
        prom = self.prometheus()
        log(f"prometheus: {prom}")
        baseline = remote["healthz_ms"]["p50"] or 1e-9
        return {
            **seeded,
            "queries_per_scrape": local["queries_per_scrape"],
            "collect_p50_ms": local["collect_ms"]["p50"],
            "collect_cpu_p50_ms": local["collect_cpu_ms_p50"],
            "exposition_bytes": local["exposition_bytes"],
            "healthz_p50_ms": remote["healthz_ms"]["p50"],
            "metrics_p50_ms": remote["metrics_ms"]["p50"],
            "metrics_p95_ms": remote["metrics_ms"]["p95"],
            "targets_p50_ms": remote["targets_ms"]["p50"],
            "targets_p95_ms": remote["targets_ms"]["p95"],
            "metrics_vs_healthz": round(remote["metrics_ms"]["p50"] / baseline, 1),
            "targets_vs_healthz": round(remote["targets_ms"]["p50"] / baseline, 1),
            "anonymous_status": remote["anonymous_status"],
            **prom,
        }

    def cleanup(self) -> None:
        self.release()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--prometheus-seconds", type=int, default=20)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    started = time.monotonic()
    os.chdir(ROOT)
    return run_bench(Bench(args), started)


if __name__ == "__main__":
    sys.exit(main())
