"""End to end: autoscaling a real llama.cpp deployment on real agents behind the real gateway.

Four closed-loop clients (the official openai client) put a load step on the gateway (the
product's ASGI app under uvicorn, publishing its figures to the real Redis); the autoscaler
runs in a thread as beat would run it, next to the deployment reconciler. The deployment
scales 1 → 3 within the panic window, back to 1 after the load stops, and with
``min_replicas`` 0 to zero after idle; then one request (not streamed, later streamed)
cold-starts a replica through the activator and succeeds. No request fails, and a sampler
of ``docker ps`` every 100 ms never sees more containers than ``max_replicas``.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from typing import Any

import openai
import pytest
from django.db import connection

from core.models import HistoryEvent
from deployments import autoscaler
from deployments import services as deployment_services
from deployments.models import Deployment
from gateway import services
from tests.deployments import e2e
from tests.fleet.agents import wait_until
from tests.gateway.support import ServedApp

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

POLICY = {
    "enabled": True,
    "min_replicas": 1,
    "max_replicas": 3,
    "metric": "concurrency",
    "target": 1,
    "stable_window_seconds": 4,
    "panic_window_seconds": 2,
    "scale_down_stabilization_seconds": 3,
    "idle_seconds": 5,
    "cold_start_timeout_seconds": 60,
}


class AutoscaleLoop(threading.Thread):
    """``autoscaler.tick()`` every ``interval`` seconds (beat's FLEET_AUTOSCALE_MS)."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(name="autoscaler", daemon=True)
        self.interval = interval
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.interval):
                try:
                    autoscaler.tick()
                except Exception as exc:
                    self.errors.append(repr(exc))
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


class Sampler(threading.Thread):
    """Running containers of one deployment, every 100 ms (``docker ps`` on the node)."""

    def __init__(self, docker_client: Any, prefix: str) -> None:
        super().__init__(name="docker-sampler", daemon=True)
        self.client = docker_client
        self.prefix = prefix
        self.stopping = threading.Event()
        self.counts: list[tuple[float, int]] = []

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            running = self.client.containers.list(filters={"label": "fleet.managed=true"})
            self.counts.append(
                (time.monotonic(), sum(1 for c in running if c.name.startswith(self.prefix)))
            )

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


class Clients:
    """``count`` closed-loop clients through the gateway, counting answers and failures."""

    def __init__(self, client: openai.OpenAI, model: str, count: int) -> None:
        self.client = client
        self.model = model
        self.stopping = threading.Event()
        self.failures: list[str] = []
        self.replicas: Counter[str] = Counter()
        self.threads = [
            threading.Thread(target=self._loop, daemon=True, name=f"client-{i}")
            for i in range(count)
        ]

    def start(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def _loop(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    raw = self.client.completions.with_raw_response.create(
                        model=self.model, prompt="Hello", max_tokens=64
                    )
                    answer = raw.parse()
                    assert answer.usage is not None and answer.usage.completion_tokens > 0
                    self.replicas[raw.headers["x-fleet-replica"]] += 1
                except Exception as exc:
                    self.failures.append(repr(exc))
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)


def desired(deployment: Deployment) -> int:
    deployment.refresh_from_db()
    return deployment.desired_replicas


def test_autoscaling_from_one_to_three_and_to_zero(stage: e2e.Stage):
    runner, ctx = stage.runner, stage.ctx
    stage.configure(FLEET_GATEWAY_REFRESH_MS=500, FLEET_DRAIN_SECONDS=20)
    variant = stage.publish()
    suffix = uuid.uuid4().hex[:6]
    e2e.start(runner, f"as-a-{suffix}")
    loop = e2e.DeploymentLoop()
    loop.start()
    scaler = AutoscaleLoop()
    scaler.start()
    served = ServedApp().start()
    name = f"as-{suffix}"
    sampler = Sampler(stage.docker_client, f"fleet-{name}")
    try:
        spec = {**e2e.llamacpp_spec(variant, 1), "autoscaling": POLICY}
        deployment = deployment_services.create_deployment(ctx, name, spec)

        def why() -> str:
            decision = autoscaler.status(deployment)["last_decision"]
            explained = e2e.explain(deployment, runner, loop)
            return f"{explained}\nautoscaler {scaler.errors[-3:]} {decision}"

        wait_until(lambda: e2e.settled(deployment, 1), 90, message=why)
        _, secret = services.create_key(ctx, name="autoscale-e2e")
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=secret, max_retries=0)
        client.completions.create(model=name, prompt="Hi", max_tokens=4)  # the gateway is up
        sampler.start()

        # a load step: 4 closed-loop clients on a target of 1 per replica → 3 (the max)
        load = Clients(client, name, 4).start()
        stepped = time.monotonic()
        wait_until(lambda: desired(deployment) == 3, 30, message=why)
        reaction = time.monotonic() - stepped
        print(f"load step → desired 3 in {reaction:.2f} s")
        assert reaction <= 6, f"scaled to 3 after {reaction:.1f} s (panic window: 6 s)"
        wait_until(lambda: e2e.settled(deployment, 3), 60, message=why)
        served_ids = {str(r.pk) for r in e2e.available(deployment)}
        wait_until(lambda: all(load.replicas[rid] > 0 for rid in served_ids), 30, message=why)
        load.stop()
        assert load.failures == [], load.failures[:5]

        # load stops → back to min after the stabilization window, drained
        wait_until(lambda: desired(deployment) == 1, 60, message=why)
        wait_until(lambda: e2e.settled(deployment, 1), 60, message=why)

        # min 0: idle → zero; the next request cold-starts a replica (not streamed, streamed)
        serving = {r.pk for r in e2e.available(deployment)}
        min_one_until = time.monotonic()  # min_replicas was 1 until here
        deployment = deployment_services.update_spec(
            ctx, deployment, {"autoscaling": {"min_replicas": 0}}
        )
        # a policy change is a revision, with nothing to restart for it
        wait_until(lambda: e2e.settled(deployment, 1) or desired(deployment) == 0, 30)
        if desired(deployment) == 1:
            assert {r.pk for r in e2e.available(deployment)} == serving
        for stream in (False, True):
            wait_until(lambda: desired(deployment) == 0, 60, message=why)
            wait_until(lambda: sampler.counts and sampler.counts[-1][1] == 0, 60, message=why)
            started = time.monotonic()
            if stream:
                chunks = list(
                    client.chat.completions.create(
                        model=name,
                        messages=[{"role": "user", "content": "Hi"}],
                        max_tokens=4,
                        stream=True,
                    )
                )
                assert chunks and any(c.choices for c in chunks)
            else:
                answer = client.completions.create(model=name, prompt="Hi", max_tokens=4)
                assert answer.usage is not None and answer.usage.completion_tokens > 0
            cold = time.monotonic() - started
            print(f"cold start (stream={stream}): {cold:.3f} s")
            assert cold < 30, f"cold start took {cold:.1f} s"
            assert desired(deployment) == 1
        sampler.stop()
        assert sampler.counts, "the sampler saw nothing"
        assert max(count for _, count in sampler.counts) <= POLICY["max_replicas"]
        assert min(count for at, count in sampler.counts if at < min_one_until) >= 1
        # one history event per change of the desired count, by the autoscaler, with figures
        events = list(
            HistoryEvent.objects.filter(
                target_type="deployments.deployment", target_id=str(deployment.pk), verb="scaled"
            ).order_by("pk")
        )
        assert events and all(e.actor_name == "autoscaler" for e in events)
        counts = [e.changes["replicas"]["after"] for e in events]
        assert all(a != b for a, b in itertools.pairwise(counts)), counts
        assert {3, 1, 0} <= set(counts)
        assert all("autoscaler" in e.changes for e in events)
        assert scaler.errors == [] and loop.errors == []
    finally:
        sampler.stopping.set()
        served.stop()
        scaler.stop()
        loop.stop()
        e2e.remove_containers(stage.docker_client, f"fleet-{name}")
