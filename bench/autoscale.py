#!/usr/bin/env python
"""Autoscaling benchmark: cold start from zero through the gateway against a raw
``docker run``, the reaction to a load step, and failed requests over 0 → N → 0.

    .venv/bin/python bench/autoscale.py [--rounds 10] [--reaction-rounds 3]

Set-up as bench/rollout.py (its ``Bench``: the local llama-server image and tiny GGUF, the
test hub, a database of its own, uvicorn with the embedded gateway, a control worker, beat
running the autoscaler every FLEET_AUTOSCALE_MS, one real agent; the variant downloaded to
the node first, not timed). One deployment with autoscaling on (min 0, max 3, target 1
concurrent request per replica, short windows: stable 2 s, panic 1 s, idle 2 s), created
at zero. Then, interleaved, ``--rounds`` rounds of:

- **fleet**: the deployment is at zero (no container); one streamed chat completion through
  the gateway with an access key: the time to its first token. The activator holds it, asks
  for a replica, forwards it once the replica is healthy. Then the bench waits for the
  autoscaler to take it back to zero (idle, drained);
- **raw**: the same ContainerSpec (the fleet replica's, renamed, another port) started with
  the Docker SDK, its health polled every 50 ms, then the same streamed request straight to
  it: the time to its first token; removed.

Reaction (``--reaction-rounds``): with one replica serving, four closed-loop clients start
(non-streamed, 64 tokens); the time until a second replica answers one of them. Load stops;
back to zero. Every request of the run is counted; a failure is any error or non-200.

Last line: one JSON object (``cold_start_ratio``, ``cold_start_added_p50_ms``,
``scale_up_reaction_p50_s``, ``failed_requests``, ``rounds``, …). Targets: ratio of medians
≤ 1.3, added p50 ≤ 150 ms, reaction p50 ≤ 5 s, 0 failed requests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

from _common import free_port, log, wait_for  # noqa: E402
from _services import Missing, services  # noqa: E402
from rollout import Bench as RolloutBench  # noqa: E402

TARGETS = {
    "cold_start_ratio": 1.3,
    "cold_start_added_p50_ms": 150.0,
    "scale_up_reaction_p50_s": 5.0,
    "failed_requests": 0,
}
NAME = "bench-autoscale"
POLICY = {
    "enabled": True,
    "min_replicas": 0,
    "max_replicas": 3,
    "target": 1,
    "stable_window_seconds": 2,
    "panic_window_seconds": 1,
    "scale_down_stabilization_seconds": 0,
    "idle_seconds": 2,
    "cold_start_timeout_seconds": 60,
}
BODY = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "stream": True}


def first_token(session: Any, url: str, headers: dict[str, str], body: dict[str, Any]) -> float:
    """Seconds from sending a streamed completion to its first content chunk; the rest of
    the answer is read too (a failure raises)."""
    started = time.perf_counter()
    with session.post(url, json=body, headers=headers, stream=True, timeout=90) as answer:
        if answer.status_code != 200:
            raise RuntimeError(f"{url} answered {answer.status_code}: {answer.text[:300]}")
        first = None
        for line in answer.iter_lines():
            if first is None and line.startswith(b"data:") and b'"content"' in line:
                first = time.perf_counter() - started
        if first is None:
            raise RuntimeError(f"{url}: no token in the stream")
        return first


class Bench(RolloutBench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.deployment_id = 0
        self.key = ""
        self.requests = 0
        self.failures: list[str] = []
        self.spec: dict[str, Any] | None = None

    # --- the deployment ---
    def create(self) -> None:
        from core.history import ChangeContext
        from gateway import services as gateway_services

        spec = {
            "variant": self.variant_id,
            "runtime": "llamacpp",
            "replicas": 0,
            "runtime_args": {"context_size": 256, "threads": 1},
            "autoscaling": POLICY,
        }
        status, body = self.api("POST", "/api/v1/deployments/", {"name": NAME, "spec": spec})
        if status != 201:
            raise RuntimeError(f"create answered {status}: {body}")
        self.deployment_id = int(body["id"])
        _, self.key = gateway_services.create_key(ChangeContext.system("bench"), name="bench")

    def at_zero(self) -> None:
        from deployments.models import Deployment, Replica

        def zero() -> bool:
            desired = Deployment.objects.get(pk=self.deployment_id).desired_replicas
            live = Replica.objects.filter(deployment_id=self.deployment_id).exclude(
                state__in=("gone", "failed")
            )
            running = self.docker.api.containers(filters={"label": f"fleet.node={self.node_id}"})
            return desired == 0 and not live.exists() and not running

        wait_for(zero, 60, "the deployment to scale to zero", step=0.1)

    def gateway(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    # --- rounds ---
    def fleet_cold(self, session: Any) -> float:
        self.at_zero()
        self.requests += 1
        try:
            elapsed = first_token(
                session,
                self.gateway("/v1/chat/completions"),
                self.headers(),
                {**BODY, "model": NAME},
            )
        except Exception as exc:
            self.failures.append(repr(exc))
            raise
        if self.spec is None:
            from deployments.models import Replica
            from deployments.replica_specs import container_spec

            replica = Replica.objects.filter(
                deployment_id=self.deployment_id, state__in=("healthy", "available")
            ).first()
            assert replica is not None
            self.spec, _ = container_spec(replica)
        return elapsed

    def raw_cold(self, session: Any, index: int) -> float:
        from fleet.agent.containers import health_url, run_arguments, snapshot_dir, wait_healthy
        from models_catalog.models import Variant

        assert self.spec is not None
        variant = Variant.objects.select_related("model").get(pk=self.variant_id)
        model_dir = snapshot_dir(self.data_dir, variant.model.repo_id, variant.model.commit_sha)
        port = free_port()
        spec = json.loads(json.dumps(self.spec))
        spec["name"] = f"bench-as-raw-{index}"
        command = [str(c) for c in spec["command"]]
        old_port = command[command.index("--port") + 1]
        spec["command"] = [str(port) if c == old_port else c for c in command]
        spec["labels"] = {"bench": "raw"}  # not fleet-managed
        started = time.perf_counter()
        container = self.docker.containers.run(**run_arguments(spec, model_dir))
        self.containers.add(container.id)
        try:
            problem = wait_healthy(health_url(spec, port), started + 60, session=session)
            if problem:
                raise RuntimeError(f"raw container not healthy: {problem}")
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            healthy = time.perf_counter() - started
            return healthy + first_token(session, url, {}, {**BODY, "model": NAME})
        finally:
            container.remove(force=True)
            self.containers.discard(container.id)

    def reaction(self, session: Any) -> float:
        """One replica serving; four closed-loop clients; seconds until a second replica
        answers one of them."""
        import requests

        self.at_zero()
        first_token(
            session, self.gateway("/v1/chat/completions"), self.headers(), {**BODY, "model": NAME}
        )
        self.requests += 1
        seen: dict[str, float] = {}
        stopping = threading.Event()
        lock = threading.Lock()

        def client() -> None:
            with requests.Session() as own:
                while not stopping.is_set():
                    try:
                        answer = own.post(
                            self.gateway("/v1/completions"),
                            json={"model": NAME, "prompt": "Hello", "max_tokens": 64},
                            headers=self.headers(),
                            timeout=90,
                        )
                        with lock:
                            self.requests += 1
                            if answer.status_code != 200:
                                self.failures.append(f"{answer.status_code} {answer.text[:200]}")
                            else:
                                seen.setdefault(
                                    answer.headers["x-fleet-replica"], time.perf_counter()
                                )
                    except Exception as exc:
                        with lock:
                            self.requests += 1
                            self.failures.append(repr(exc))

        started = time.perf_counter()
        threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(seen) >= 2, 60, "a second replica to serve", step=0.05)
            second = sorted(seen.values())[1]
        finally:
            stopping.set()
            for thread in threads:
                thread.join(100)
        return second - started

    def run(self) -> dict[str, Any]:
        import requests

        self.create()
        fleet: list[float] = []
        raw: list[float] = []
        with requests.Session() as session:
            self.fleet_cold(session)  # warm-up: the first start of the variant on the node
            self.raw_cold(session, 0)
            for index in range(1, self.args.rounds + 1):
                if index % 2:
                    fleet.append(self.fleet_cold(session))
                    raw.append(self.raw_cold(session, index))
                else:
                    raw.append(self.raw_cold(session, index))
                    fleet.append(self.fleet_cold(session))
                log(f"cold {index}: fleet {fleet[-1] * 1000:.0f} ms, raw {raw[-1] * 1000:.0f} ms")
            reactions = []
            for index in range(self.args.reaction_rounds):
                reactions.append(self.reaction(session))
                log(f"reaction {index + 1}: {reactions[-1]:.2f} s")
            self.at_zero()
        fleet_p50, raw_p50 = statistics.median(fleet), statistics.median(raw)
        added = [f - r for f, r in zip(fleet, raw, strict=True)]
        figures: dict[str, Any] = {
            "rounds": len(fleet),
            "cold_start_fleet_p50_ms": round(fleet_p50 * 1000, 1),
            "cold_start_raw_p50_ms": round(raw_p50 * 1000, 1),
            "cold_start_ratio": round(fleet_p50 / raw_p50, 3),
            "cold_start_added_p50_ms": round(statistics.median(added) * 1000, 1),
            "scale_up_reaction_p50_s": round(statistics.median(reactions), 3),
            "reaction_rounds": len(reactions),
            "requests": self.requests,
            "failed_requests": len(self.failures),
            "failures": self.failures[:5],
            "targets": TARGETS,
        }
        figures["ok"] = (
            figures["cold_start_ratio"] <= TARGETS["cold_start_ratio"]
            and figures["cold_start_added_p50_ms"] <= TARGETS["cold_start_added_p50_ms"]
            and figures["scale_up_reaction_p50_s"] <= TARGETS["scale_up_reaction_p50_s"]
            and figures["failed_requests"] == 0
        )
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--reaction-rounds", type=int, default=3)
    parser.add_argument("--web-workers", type=int, default=1)
    parser.add_argument("--poll-ms", type=float, default=250.0)
    args = parser.parse_args(argv)
    bench = Bench(args)
    try:
        with services("postgres", "redis", "docker", log=log):
            try:
                bench.prepare()
                bench.start_processes()
                bench.seed_model()
                figures = bench.run()
            finally:
                bench.cleanup()
    except Missing as exc:
        log(f"cannot run: {exc}")
        print(json.dumps({"error": str(exc), "ok": False}), flush=True)
        return 1
    print(json.dumps(figures), flush=True)
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
